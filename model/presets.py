"""Named model shapes: Kaplan's ladder, and real models from their published configurations.

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

# Real models, each from its published configuration (the source is named above it). Only what
# changes a parameter or FLOP count is kept; n_ctx is the context the model was trained at.
_LLAMA = dict(mlp="swiglu", norm="rmsnorm", pos="rope", bias=False, tie_head=False)
REAL_MODELS: dict[str, GPTConfig] = {
    # GPT-2 (Radford et al. 2019; Hugging Face gpt2, gpt2-medium, gpt2-large, gpt2-xl config.json)
    "gpt2-small": PRESETS["gpt2-small"],
    "gpt2-medium": PRESETS["gpt2-medium"],
    "gpt2-large": GPTConfig(n_layer=36, d_model=1280, d_attn=1280, d_ff=5120, n_head=20,
                            n_ctx=1024, n_vocab=50257, name="gpt2-large"),
    "gpt2-xl": GPTConfig(n_layer=48, d_model=1600, d_attn=1600, d_ff=6400, n_head=25,
                         n_ctx=1024, n_vocab=50257, name="gpt2-xl"),
    # GPT-3 175B (Brown et al. 2020, Table 2.1: 96 layers, d_model 12288, 96 heads of 128, n_ctx
    # 2048, GPT-2's tokenizer). Its alternating locally banded sparse layers are not modelled.
    "gpt3-175b": GPTConfig(n_layer=96, d_model=12288, d_attn=12288, d_ff=49152, n_head=96,
                           n_ctx=2048, n_vocab=50257, name="gpt3-175b"),
    # Chinchilla 70B (Hoffmann et al. 2022, Table 4: 80 layers, d_model 8192, 64 heads of 128,
    # d_ff 4 d_model; RMSNorm, 32k SentencePiece vocabulary, n_ctx 2048). Its relative position
    # encoding is modelled as no position parameters ("none"); untied head as in Gopher.
    "chinchilla-70b": GPTConfig(n_layer=80, d_model=8192, d_attn=8192, d_ff=32768, n_head=64,
                                n_ctx=2048, n_vocab=32000, norm="rmsnorm", pos="none", bias=False,
                                tie_head=False, name="chinchilla-70b"),
    # Llama 2 7B (meta-llama/Llama-2-7b-hf config.json)
    "llama-2-7b": GPTConfig(n_layer=32, d_model=4096, d_attn=4096, d_ff=11008, n_head=32,
                            n_ctx=4096, n_vocab=32000, ln_eps=1e-5, name="llama-2-7b", **_LLAMA),
    # Llama 3 8B and 70B (meta-llama/Meta-Llama-3-8B, -70B config.json; rope_theta 500000)
    "llama-3-8b": GPTConfig(n_layer=32, d_model=4096, d_attn=4096, d_ff=14336, n_head=32,
                            n_kv_head=8, n_ctx=8192, n_vocab=128256, rope_theta=500000.0,
                            name="llama-3-8b", **_LLAMA),
    "llama-3-70b": GPTConfig(n_layer=80, d_model=8192, d_attn=8192, d_ff=28672, n_head=64,
                             n_kv_head=8, n_ctx=8192, n_vocab=128256, rope_theta=500000.0,
                             name="llama-3-70b", **_LLAMA),
    # Mistral 7B v0.1 (mistralai/Mistral-7B-v0.1 config.json: sliding_window 4096; the paper's
    # training context 8192)
    "mistral-7b": GPTConfig(n_layer=32, d_model=4096, d_attn=4096, d_ff=14336, n_head=32,
                            n_kv_head=8, n_ctx=8192, n_vocab=32000, window=4096,
                            name="mistral-7b", **_LLAMA),
    # Mixtral 8x7B (mistralai/Mixtral-8x7B-v0.1 config.json: 8 local experts, 2 per token, expert
    # width 14336, n_ctx 32768, rope_theta 1e6, no sliding window)
    "mixtral-8x7b": GPTConfig(n_layer=32, d_model=4096, d_attn=4096, d_ff=14336, n_head=32,
                              n_kv_head=8, n_ctx=32768, n_vocab=32000, n_expert=8, top_k=2,
                              rope_theta=1e6, name="mixtral-8x7b", **_LLAMA),
    # Qwen2.5 7B (Qwen/Qwen2.5-7B config.json: QKV biases only, 4 key/value heads, n_ctx 32768,
    # rope_theta 1e6, sliding window off)
    "qwen2.5-7b": GPTConfig(n_layer=28, d_model=3584, d_attn=3584, d_ff=18944, n_head=28,
                            n_kv_head=4, n_ctx=32768, n_vocab=152064, qkv_bias=True,
                            rope_theta=1e6, ln_eps=1e-6, name="qwen2.5-7b", **_LLAMA),
}
PRESETS.update(REAL_MODELS)


def get_preset(name: str, **overrides) -> GPTConfig:
    """A preset by name, with fields overridden (e.g. n_ctx, n_vocab, backend)."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return cfg.replace(**overrides) if overrides else cfg
