"""Model configuration: a GPT-style decoder parameterised exactly as in Kaplan et al. (2020).

Kaplan's hyper-parameters are n_layer, d_model, d_attn, d_ff, n_head, n_ctx and n_vocab. Their default
shape keeps d_attn = d_model and d_ff = 4 d_model, so that the non-embedding parameter count is
N = 2 d_model n_layer (2 d_attn + d_ff) = 12 n_layer d_model^2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

# "torch": plain PyTorch reference with attention as explicit matmuls (runs anywhere, and every
#          product is visible to FlopCounterMode); "sdpa": PyTorch's fused
#          scaled_dot_product_attention (the speed baseline); "triton": sixn's kernels.
BACKENDS = ("torch", "sdpa", "triton")


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12          # depth; GPT-2 small has 12 blocks
    d_model: int = 768         # residual stream width; GPT-2 small
    d_attn: int = 768          # total width of Q, K and V (n_head * head_dim); Kaplan's default d_model
    d_ff: int = 3072           # MLP inner width; Kaplan's default 4 * d_model
    n_head: int = 12           # attention heads; head_dim = d_attn / n_head = 64 as in GPT-2
    n_ctx: int = 1024          # context length trained on (Kaplan and GPT-2 use 1024)
    n_vocab: int = 50257       # GPT-2's BPE vocabulary; the byte tokenizer uses 256
    tie_head: bool = True      # de-embedding shares the token embedding (GPT-2); False adds its own matrix
    bias: bool = True          # biases in every Linear and LayerNorm, as in GPT-2
    ln_eps: float = 1e-5       # LayerNorm epsilon (PyTorch's default)
    backend: str = "torch"     # "torch" reference, "sdpa" baseline or "triton" kernels (see BACKENDS)
    name: str = field(default="custom", compare=False)  # preset name, for tables and file names

    def __post_init__(self) -> None:
        for f in ("n_layer", "d_model", "d_attn", "d_ff", "n_head", "n_ctx", "n_vocab"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"GPTConfig.{f} must be an int, got {type(v).__name__} {v!r}")
            if v <= 0:
                raise ValueError(f"GPTConfig.{f} must be positive, got {v}")
        if self.d_attn % self.n_head != 0:
            raise ValueError(
                f"GPTConfig: d_attn ({self.d_attn}) must be divisible by n_head ({self.n_head}); "
                f"head_dim = d_attn / n_head must be a whole number"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"GPTConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if not self.ln_eps > 0:
            raise ValueError(f"GPTConfig.ln_eps must be > 0, got {self.ln_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_attn // self.n_head

    @classmethod
    def from_shape(
        cls,
        n_layer: int,
        d_model: int,
        *,
        n_ctx: int = 1024,
        n_vocab: int = 50257,
        d_attn: int | None = None,
        d_ff: int | None = None,
        n_head: int | None = None,
        **kw,
    ) -> "GPTConfig":
        """Kaplan's default shape around (n_layer, d_model): d_attn = d_model, d_ff = 4 d_model and
        heads of width 64 (or fewer, narrower heads when d_model is small)."""
        d_attn = d_model if d_attn is None else d_attn
        d_ff = 4 * d_model if d_ff is None else d_ff
        if n_head is None:
            n_head = max(1, d_attn // 64) if d_attn % 64 == 0 else _largest_head_count(d_attn)
        return cls(n_layer=n_layer, d_model=d_model, d_attn=d_attn, d_ff=d_ff, n_head=n_head,
                   n_ctx=n_ctx, n_vocab=n_vocab, **kw)

    def replace(self, **kw) -> "GPTConfig":
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        return dataclass_from_dict(cls, d)


def dataclass_from_dict(cls, d: dict):
    """cls(**d) for a dataclass, with a clear error naming unknown fields."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(names)}")
    return cls(**d)


def _largest_head_count(d_attn: int) -> int:
    """Smallest head count whose head_dim is a power of two no wider than 64 and at least 16."""
    for hd in (64, 32, 16):
        if d_attn % hd == 0:
            return d_attn // hd
    return 1
