"""Named model shapes.

The ladder follows Kaplan et al.'s shape rule (d_attn = d_model, d_ff = 4 d_model, heads of width
<= 64) and keeps the aspect ratio d_model / n_layer between 16 and 64, inside the range over which
Kaplan found the loss nearly shape-independent (their Fig. 5). Non-embedding parameters
N = 12 n_layer d_model^2 run from 1.2e4 to 1.1e9, about five decades. Ladder presets carry GPT-2's
n_ctx and n_vocab; scaling runs override both with what their data and device allow.
"""

from __future__ import annotations

from .config import GPTConfig

# (name, n_layer, d_model): N = 12 * n_layer * d_model**2 in the comment
_LADDER = (
    ("ladder-12k", 1, 32),      # 1.23e4  (one layer: kept out of C_min fits, as in Kaplan)
    ("ladder-25k", 2, 32),      # 2.46e4
    ("ladder-98k", 2, 64),      # 9.83e4
    ("ladder-197k", 4, 64),     # 1.97e5
    ("ladder-786k", 4, 128),    # 7.86e5
    ("ladder-3m", 4, 256),      # 3.15e6
    ("ladder-14m", 8, 384),     # 1.42e7
    ("ladder-25m", 8, 512),     # 2.52e7
    ("ladder-85m", 12, 768),    # 8.49e7  (GPT-2 small's shape)
    ("ladder-302m", 24, 1024),  # 3.02e8  (GPT-2 medium's shape)
    ("ladder-679m", 24, 1536),  # 6.79e8
    ("ladder-1.1b", 36, 1600),  # 1.11e9
)

PRESETS: dict[str, GPTConfig] = {
    name: GPTConfig.from_shape(n_layer, d_model, name=name) for name, n_layer, d_model in _LADDER
}
PRESETS["gpt2-small"] = GPTConfig(n_layer=12, d_model=768, d_attn=768, d_ff=3072, n_head=12,
                                  n_ctx=1024, n_vocab=50257, name="gpt2-small")
PRESETS["gpt2-medium"] = GPTConfig(n_layer=24, d_model=1024, d_attn=1024, d_ff=4096, n_head=16,
                                   n_ctx=1024, n_vocab=50257, name="gpt2-medium")
# Small enough for the Triton interpreter and FlopCounterMode in unit tests (head_dim 16).
PRESETS["tiny"] = GPTConfig(n_layer=2, d_model=64, d_attn=64, d_ff=256, n_head=4,
                            n_ctx=64, n_vocab=256, name="tiny")

LADDER: tuple[str, ...] = tuple(name for name, _, _ in _LADDER)


def get_preset(name: str, **overrides) -> GPTConfig:
    """A preset by name, with fields overridden (e.g. n_ctx, n_vocab, backend)."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg
