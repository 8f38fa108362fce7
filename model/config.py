"""Model configuration: a decoder-only Transformer, by default exactly Kaplan et al.'s (2020) GPT.

Kaplan's hyper-parameters are n_layer, d_model, d_attn, d_ff, n_head, n_ctx and n_vocab. Their default
shape keeps d_attn = d_model and d_ff = 4 d_model, so that the non-embedding parameter count is
N = 2 d_model n_layer (2 d_attn + d_ff) = 12 n_layer d_model^2.

The fields after those express the decoders trained since (Llama, Mistral, Qwen2, Mixtral); each
defaults to Kaplan's choice, so a config that sets none of them is his GPT:
- n_kv_head: key/value heads of grouped-query attention (H_kv divides n_head; 1 = multi-query);
  key/value width a_kv = n_kv_head * head_dim.
- mlp: "gelu" (two matrices, tanh GELU), "swiglu" or "geglu" (gated: three matrices
  W_down (act(x W_gate) * x W_up), d_ff the gated width).
- norm: "layernorm" or "rmsnorm" (scale only); pos: "learned" position embedding, "rope" (rotary, no
  parameters) or "none".
- bias switches: `bias` (every Linear and the LayerNorm shift, GPT-2) and the overrides qkv_bias,
  proj_bias, mlp_bias (None = follow `bias`; Qwen2 is bias=False, qkv_bias=True).
- mixture of experts: n_expert routed experts (0 = dense), top_k of them per token (softmax router
  without bias, renormalised over the top_k), n_shared_expert always-on experts, d_expert each
  expert's width (None = d_ff), n_dense_layer first blocks kept dense (width d_ff).
- window: sliding-window attention, each query sees itself and the window - 1 keys before it
  (None = full causal attention).
- recompute: activation recompute in backward ("selective": the attention core; "full": each
  block), which changes the executed (hardware) FLOPs and never the model FLOPs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

# "torch": plain PyTorch reference with attention as explicit matmuls (runs anywhere, and every
#          product is visible to FlopCounterMode); "sdpa": PyTorch's fused
#          scaled_dot_product_attention (the speed baseline); "triton": sixn's kernels.
BACKENDS = ("torch", "sdpa", "triton")
MLPS = ("gelu", "swiglu", "geglu")
GATED_MLPS = ("swiglu", "geglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
RECOMPUTES = ("none", "selective", "full")


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
    n_kv_head: int | None = None   # key/value heads (GQA); None = n_head, multi-head as in GPT-2
    mlp: str = "gelu"              # feed-forward: "gelu" (GPT-2) or gated "swiglu" / "geglu"
    norm: str = "layernorm"        # "layernorm" (GPT-2) or "rmsnorm"
    pos: str = "learned"           # position: "learned" table (GPT-2), "rope" or "none"
    qkv_bias: bool | None = None   # bias of the Q, K, V projections; None = `bias`
    proj_bias: bool | None = None  # bias of the attention output projection; None = `bias`
    mlp_bias: bool | None = None   # biases of the feed-forward matrices; None = `bias`
    n_expert: int = 0              # routed experts per MoE block; 0 = dense feed-forward (GPT-2)
    top_k: int = 0                 # experts each token is routed to (1 <= top_k <= n_expert with MoE)
    n_shared_expert: int = 0       # experts every token goes through besides the routed ones
    d_expert: int | None = None    # width of each expert; None = d_ff
    n_dense_layer: int = 0         # first blocks with a dense feed-forward in an MoE model
    window: int | None = None      # sliding-window attention span in tokens; None = full causal
    rope_theta: float = 10000.0    # RoPE base (no effect on any count)
    recompute: str = "none"        # activation recompute: "none", "selective" (attention core) or
                                   # "full" (every block); executed (HFU) FLOPs only, never MFU

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
        self._check_variants()

    def _check_variants(self) -> None:
        def positive_int(f, v, lo=1):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"GPTConfig.{f} must be an int >= {lo}, got {v!r}")
        for f, allowed in (("mlp", MLPS), ("norm", NORMS), ("pos", POSITIONS)):
            if getattr(self, f) not in allowed:
                raise ValueError(f"GPTConfig.{f} must be one of {allowed}, got {getattr(self, f)!r}")
        if self.n_kv_head is not None:
            positive_int("n_kv_head", self.n_kv_head)
            if self.n_head % self.n_kv_head:
                raise ValueError(f"GPTConfig: n_kv_head ({self.n_kv_head}) must divide n_head "
                                 f"({self.n_head}): each key/value head serves a whole group of "
                                 f"query heads")
        for f in ("qkv_bias", "proj_bias", "mlp_bias"):
            if getattr(self, f) not in (None, True, False):
                raise ValueError(f"GPTConfig.{f} must be True, False or None, got {getattr(self, f)!r}")
        for f in ("n_expert", "top_k", "n_shared_expert", "n_dense_layer"):
            positive_int(f, getattr(self, f), lo=0)
        if self.d_expert is not None:
            positive_int("d_expert", self.d_expert)
        if self.n_expert:
            if not 1 <= self.top_k <= self.n_expert:
                raise ValueError(f"GPTConfig: top_k must be in [1, n_expert={self.n_expert}] with "
                                 f"experts, got {self.top_k}")
            if self.n_dense_layer >= self.n_layer:
                raise ValueError(f"GPTConfig: n_dense_layer ({self.n_dense_layer}) must be < n_layer "
                                 f"({self.n_layer}) in an MoE model (at least one MoE block)")
        elif self.top_k or self.n_shared_expert or self.d_expert is not None or self.n_dense_layer:
            raise ValueError("GPTConfig: top_k, n_shared_expert, d_expert and n_dense_layer need "
                             "experts (n_expert >= 1); a dense model leaves them at their defaults")
        if self.window is not None:
            positive_int("window", self.window)
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig: rope needs an even head_dim, got {self.head_dim}")
        if self.recompute not in RECOMPUTES:
            raise ValueError(f"GPTConfig.recompute must be one of {RECOMPUTES}, got {self.recompute!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"GPTConfig.rope_theta must be > 0, got {self.rope_theta}")

    @property
    def head_dim(self) -> int:
        return self.d_attn // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def d_kv(self) -> int:
        """Width of K (and of V): n_kv_head * head_dim (= d_attn without GQA)."""
        return self.kv_heads * self.head_dim

    @property
    def gated(self) -> bool:
        return self.mlp in GATED_MLPS

    @property
    def moe(self) -> bool:
        return self.n_expert > 0

    @property
    def expert_width(self) -> int:
        return self.d_ff if self.d_expert is None else self.d_expert

    @property
    def n_moe_layer(self) -> int:
        return self.n_layer - self.n_dense_layer if self.moe else 0

    def has_bias(self, part: str) -> bool:
        """Whether `part` ("qkv", "proj", "mlp", "norm") has a bias."""
        own = {"qkv": self.qkv_bias, "proj": self.proj_bias, "mlp": self.mlp_bias}.get(part)
        if part == "norm":
            return self.bias and self.norm == "layernorm"
        return self.bias if own is None else own

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
