"""The one FLOP and parameter accounting module of sixn: every FLOP figure comes from here.

Terms (per token, for sequences of length T = n_ctx unless given; L = n_layer, d = d_model,
a = d_attn, f = d_ff, V = n_vocab, H = n_head, Q = head_dim):

1. Kaplan et al. (2020), Table 1, row by row (forward FLOPs per token, a multiply-add = 2 FLOPs):
     embed              params (V + n_ctx) d        flops 4 d
     attention: QKV     params L d 3a               flops 2 L d 3a
     attention: mask    params -                    flops 2 L T a     (causal half of QK^T + PV)
     attention: project params L a d                flops 2 L a d
     feedforward        params 2 L d f              flops 2 L 2 d f
     de-embed           params -                    flops 2 d V
   N = 2 d L (2a + f) (non-embedding), C_forward = 2N + 2 L T a.

2. What this model executes, row by row. Matmul rows are exact. The causal attention products
   are counted over the exact lower triangle including the diagonal, (T + 1) / 2 keys per query
   on average, so the "mask" row becomes 2 L (T + 1) a. Rows Kaplan leaves out are counted with
   fixed per-element conventions (FLOPs per element, forward): bias add 1, LayerNorm 6 (mean,
   centre, square, sum, normalise, scale; the shift is the bias row), softmax 6 (scale, max,
   subtract, exp, sum, divide), GELU 8 (tanh form), residual add 1, embedding add 1,
   cross-entropy 4 per logit. Backward of every row is 2x its forward: exact for matmuls (dX and
   dW), a stated convention for element-wise rows. The optimizer step is not counted.

3. Conventions, training FLOPs per token (forward + backward):
     kaplan_6N          6 N
     kaplan_6N_context  6 N + 6 L T a
     palm               6 N_total + 12 L H Q T   (PaLM App. B / nanoGPT's estimate_mfu; N_total is
                        every parameter but the position embedding, as nanoGPT counts it)
     full_model         every row of (2), forward + backward, no recompute
     executed           what a given implementation runs (see ExecSpec): the torch reference runs
                        the full T x T square of QK^T and PV and masks it; a blocked kernel runs
                        every block that holds one unmasked score, and a FlashAttention backward
                        recomputes QK^T. Executed FLOPs are for HFU and counters; the model counts
                        (kaplan_*, palm, full_model) are for MFU. The two are never mixed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .config import GPTConfig

PF_DAY = 1e15 * 86400  # FLOPs in one petaflop/s-day

# Forward FLOPs per element of the rows Kaplan leaves out (see module docstring, point 2).
BIAS_FLOPS = 1
LAYERNORM_FLOPS = 6
SOFTMAX_FLOPS = 6
GELU_FLOPS = 8
RESIDUAL_FLOPS = 1
EMBED_ADD_FLOPS = 1
CROSS_ENTROPY_FLOPS = 4
BACKWARD_FACTOR = 2  # backward = 2 x forward

CONVENTIONS = ("kaplan_6N", "kaplan_6N_context", "palm", "full_model")

# Coarse groups used to attribute executed FLOPs (by counters too): Kaplan's matmul rows, and
# "other" for everything element-wise.
GROUPS = ("qkv", "attention", "project", "feedforward", "de-embed", "other")


@dataclass(frozen=True)
class Row:
    component: str
    params: int
    forward_flops: int               # per token, as this model executes it (minimal: exact causal)
    backward_flops: int              # per token
    kaplan_forward_flops: int | None  # Kaplan's Table 1 figure; None for rows Kaplan leaves out
    kind: str                        # "matmul" or "elementwise"
    group: str                       # one of GROUPS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParamCounts:
    nonembedding: int  # Kaplan's N: the matmul weights of the blocks
    embedding: int     # token + position embeddings (+ an untied de-embedding matrix)
    other: int         # biases and LayerNorm weights (excluded by Kaplan from both)
    total: int         # == sum(p.numel() for p in model.parameters())
    by_component: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Accounting:
    config: GPTConfig
    seq_len: int
    rows: tuple[Row, ...]
    params: ParamCounts
    N: int
    C_forward: int
    forward_per_token: dict[str, int]
    training_per_token: dict[str, int]

    def row(self, component: str) -> Row:
        for r in self.rows:
            if r.component == component:
                return r
        raise KeyError(component)

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "seq_len": self.seq_len,
            "params": {k: v for k, v in self.params.to_dict().items()},
            "N": self.N,
            "C_forward": self.C_forward,
            "flops_per_token": dict(self.training_per_token),
            "forward_flops_per_token": dict(self.forward_per_token),
            "rows": [r.to_dict() for r in self.rows],
        }


def _check_seq_len(cfg: GPTConfig, seq_len: int | None) -> int:
    T = cfg.n_ctx if seq_len is None else seq_len
    if not isinstance(T, int) or T <= 0 or T > cfg.n_ctx:
        raise ValueError(f"seq_len must be an int in [1, n_ctx={cfg.n_ctx}], got {seq_len!r}")
    return T


def rows(cfg: GPTConfig, seq_len: int | None = None) -> tuple[Row, ...]:
    """Kaplan's six rows and the rows he leaves out, per token at sequence length seq_len."""
    T = _check_seq_len(cfg, seq_len)
    L, d, a, f, V, H = cfg.n_layer, cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_vocab, cfg.n_head
    B = BACKWARD_FACTOR

    def mm(component, params, fwd, kaplan, group):
        return Row(component, params, fwd, B * fwd, kaplan, "matmul", group)

    def ew(component, params, fwd, group="other"):
        return Row(component, params, fwd, B * fwd, None, "elementwise", group)

    causal_pairs_x2 = (T + 1)  # 2 x average keys per query, (T + 1) / 2
    n_ln = 2 * L + 1
    out = [
        Row("embed", (V + cfg.n_ctx) * d, EMBED_ADD_FLOPS * d, B * EMBED_ADD_FLOPS * d, 4 * d,
            "elementwise", "other"),
        mm("attention: QKV", L * d * 3 * a, 2 * L * d * 3 * a, 2 * L * d * 3 * a, "qkv"),
        # QK^T and PV over the causal triangle: 2 products x 2 FLOPs x a x (T+1)/2 keys per query
        mm("attention: mask", 0, 2 * L * causal_pairs_x2 * a, 2 * L * T * a, "attention"),
        mm("attention: project", L * a * d, 2 * L * a * d, 2 * L * a * d, "project"),
        mm("feedforward", L * 2 * d * f, 2 * L * 2 * d * f, 2 * L * 2 * d * f, "feedforward"),
        mm("de-embed", 0 if cfg.tie_head else V * d, 2 * d * V, 2 * d * V, "de-embed"),
        ew("biases", L * (3 * a + d + f + d) if cfg.bias else 0,
           BIAS_FLOPS * L * (3 * a + d + f + d) if cfg.bias else 0),
        ew("layernorms", n_ln * d * (2 if cfg.bias else 1), LAYERNORM_FLOPS * n_ln * d),
        # (T + 1) / 2 scores per query and head, SOFTMAX_FLOPS each
        ew("softmax", 0, SOFTMAX_FLOPS * L * H * causal_pairs_x2 // 2),
        ew("gelu", 0, GELU_FLOPS * L * f),
        ew("residual adds", 0, RESIDUAL_FLOPS * 2 * L * d),
        ew("loss (cross-entropy)", 0, CROSS_ENTROPY_FLOPS * V),
    ]
    return tuple(out)


def param_counts(cfg: GPTConfig) -> ParamCounts:
    rs = rows(cfg)
    by = {r.component: r.params for r in rs if r.params}
    nonemb = sum(by.get(k, 0) for k in ("attention: QKV", "attention: project", "feedforward"))
    emb = by.get("embed", 0) + by.get("de-embed", 0)
    other = by.get("biases", 0) + by.get("layernorms", 0)
    return ParamCounts(nonemb, emb, other, nonemb + emb + other, by)


def accounting(cfg: GPTConfig, seq_len: int | None = None) -> Accounting:
    """Parameters, Kaplan's Table 1 and every convention's FLOPs per token for one config."""
    T = _check_seq_len(cfg, seq_len)
    rs = rows(cfg, T)
    params = param_counts(cfg)
    L, a, H, Q = cfg.n_layer, cfg.d_attn, cfg.n_head, cfg.head_dim
    N = params.nonembedding
    n_total = params.total - cfg.n_ctx * cfg.d_model  # nanoGPT: all but the position embedding
    fwd = {
        "kaplan_6N": 2 * N,
        "kaplan_6N_context": 2 * N + 2 * L * T * a,
        "palm": 2 * n_total + 4 * L * H * Q * T,
        "full_model": sum(r.forward_flops for r in rs),
    }
    train = {
        "kaplan_6N": 6 * N,
        "kaplan_6N_context": 6 * N + 6 * L * T * a,
        "palm": 6 * n_total + 12 * L * H * Q * T,
        "full_model": sum(r.forward_flops + r.backward_flops for r in rs),
    }
    return Accounting(cfg, T, rs, params, N, fwd["kaplan_6N_context"], fwd, train)


def flops_per_token(cfg: GPTConfig, convention: str, seq_len: int | None = None,
                    training: bool = True, spec: "ExecSpec | None" = None) -> float:
    """Training (or forward) FLOPs per token under a named convention; "executed" needs a spec."""
    if convention == "executed":
        T = _check_seq_len(cfg, seq_len)
        ex = executed(cfg, batch=1, seq_len=T, spec=spec or ExecSpec())
        return (ex.total if training else ex.forward_total) / T
    acc = accounting(cfg, seq_len)
    table = acc.training_per_token if training else acc.forward_per_token
    if convention not in table:
        raise ValueError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}, executed")
    return table[convention]


# --------------------------------------------------------------------------------------------
# Executed FLOPs: what an implementation runs, given how its kernels tile the work.
# --------------------------------------------------------------------------------------------

def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def padded(n: int, block: int | None) -> int:
    return n if block is None else cdiv(n, block) * block


def visited_block_pairs(T: int, block_m: int, block_n: int, causal: bool) -> int:
    """Number of (query block, key block) tiles a blocked attention kernel runs for one (b, h).

    A tile (i, j) holds queries [i bm, (i+1) bm) and keys [j bn, (j+1) bn), both clipped to T. It
    is run when it holds at least one unmasked score: always without a mask, and when
    j bn < min((i + 1) bm, T) with a causal mask (some key at or before some query)."""
    n_m, n_n = cdiv(T, block_m), cdiv(T, block_n)
    if not causal:
        return n_m * n_n
    return sum(cdiv(min((i + 1) * block_m, T), block_n) for i in range(n_m))


@dataclass(frozen=True)
class AttentionExec:
    """How an attention implementation executes its QK^T and PV products.

    blocked=False: dense square products, as the torch reference runs them (QK^T and PV over the
    full T x T square whatever the mask; backward: four square products, 2x forward).
    blocked=True: a tiled kernel. Forward visits the tiles of `visited_block_pairs(T, *fwd_blocks)`
    and runs `fwd_dots` block products of (bm x bn x block_d) in each. Backward is one or more
    passes (block_m, block_n, dots): each visits its own tiles and runs `dots` products per tile
    (a FlashAttention-2 backward recomputes QK^T in every pass that needs P)."""
    blocked: bool = False
    fwd_blocks: tuple[int, int] = (64, 64)
    fwd_dots: int = 2
    bwd_passes: tuple[tuple[int, int, int], ...] = ()
    block_d: int | None = None  # head dim as the kernel pads it; None = head_dim

    def forward_flops(self, batch: int, n_head: int, T: int, head_dim: int, causal: bool) -> int:
        if not self.blocked:
            return 2 * (2 * batch * n_head * T * T * head_dim)
        D = self.block_d or head_dim
        bm, bn = self.fwd_blocks
        return batch * n_head * visited_block_pairs(T, bm, bn, causal) * self.fwd_dots * 2 * bm * bn * D

    def backward_flops(self, batch: int, n_head: int, T: int, head_dim: int, causal: bool) -> int:
        if not self.blocked:
            return 4 * (2 * batch * n_head * T * T * head_dim)
        D = self.block_d or head_dim
        return sum(batch * n_head * visited_block_pairs(T, bm, bn, causal) * dots * 2 * bm * bn * D
                   for bm, bn, dots in self.bwd_passes)


@dataclass(frozen=True)
class GemmExec:
    """How a GEMM Y[M, N] = X[M, K] @ W[N, K]^T and its backward are executed.

    Tiles are (rows, cols, reduction) of each product; None means exact 2MNK (cuBLAS, counted by
    shape). recompute=True: the backward re-runs the forward product (pre-activation recompute)."""
    fwd_tiles: tuple[int, int, int] | None = None
    dx_tiles: tuple[int, int, int] | None = None   # dX[M, K] = dY[M, N] @ W[N, K]
    dw_tiles: tuple[int, int, int] | None = None   # dW[N, K] = dY^T[N, M] @ X[M, K]
    recompute: bool = False

    @staticmethod
    def _mm(rows_: int, cols: int, red: int, tiles) -> int:
        if tiles is None:
            return 2 * rows_ * cols * red
        return 2 * padded(rows_, tiles[0]) * padded(cols, tiles[1]) * padded(red, tiles[2])

    def forward_flops(self, M: int, N: int, K: int) -> int:
        return self._mm(M, N, K, self.fwd_tiles)

    def backward_flops(self, M: int, N: int, K: int) -> int:
        total = self._mm(M, K, N, self.dx_tiles) + self._mm(N, K, M, self.dw_tiles)
        return total + (self.forward_flops(M, N, K) if self.recompute else 0)


EXACT_GEMM = GemmExec()


@dataclass(frozen=True)
class ExecSpec:
    """The kernel behaviour an executed count depends on. Default: the torch reference."""
    attention: AttentionExec = AttentionExec()
    mlp_up: GemmExec = EXACT_GEMM  # the d_model -> d_ff product (a fused kernel in the triton backend)
    causal: bool = True
    name: str = "torch"


@dataclass(frozen=True)
class Executed:
    """Executed FLOPs of one training step (B sequences of T tokens), by group."""
    batch: int
    seq_len: int
    forward: dict[str, int]   # matmul FLOPs by group; "other" holds the element-wise rows
    backward: dict[str, int]
    spec_name: str

    @property
    def forward_total(self) -> int:
        return sum(self.forward.values())

    @property
    def total(self) -> int:
        return self.forward_total + sum(self.backward.values())

    @property
    def matmul_total(self) -> int:
        return sum(self.forward[g] + self.backward[g] for g in GROUPS if g != "other")

    def by_group(self) -> dict[str, int]:
        return {g: self.forward[g] + self.backward[g] for g in GROUPS}

    def to_dict(self) -> dict:
        return {"batch": self.batch, "seq_len": self.seq_len, "spec": self.spec_name,
                "forward": dict(self.forward), "backward": dict(self.backward),
                "matmul_total": self.matmul_total, "total": self.total}


def executed(cfg: GPTConfig, batch: int, seq_len: int | None = None,
             spec: ExecSpec = ExecSpec()) -> Executed:
    """Executed FLOPs of one training step (forward + backward), by group, for `spec`'s kernels."""
    T = _check_seq_len(cfg, seq_len)
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    L, d, a, f, V, H = cfg.n_layer, cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_vocab, cfg.n_head
    M = batch * T  # tokens in the step
    at = spec.attention
    fwd = {
        "qkv": L * 2 * M * d * 3 * a,
        "attention": L * at.forward_flops(batch, H, T, cfg.head_dim, spec.causal),
        "project": L * 2 * M * a * d,
        "feedforward": L * (spec.mlp_up.forward_flops(M, f, d) + 2 * M * f * d),
        "de-embed": 2 * M * d * V,
    }
    bwd = {
        "qkv": 2 * fwd["qkv"],
        "attention": L * at.backward_flops(batch, H, T, cfg.head_dim, spec.causal),
        "project": 2 * fwd["project"],
        "feedforward": L * (spec.mlp_up.backward_flops(M, f, d) + 2 * 2 * M * f * d),
        "de-embed": 2 * fwd["de-embed"],
    }
    ew = [r for r in rows(cfg, T) if r.kind == "elementwise"]
    fwd["other"] = M * sum(r.forward_flops for r in ew)
    bwd["other"] = M * sum(r.backward_flops for r in ew)
    return Executed(batch, T, fwd, bwd, spec.name)


def model_flops_per_step(cfg: GPTConfig, batch: int, seq_len: int | None = None,
                         convention: str = "palm") -> int:
    """Model FLOPs (for MFU) of one training step of `batch` sequences."""
    T = _check_seq_len(cfg, seq_len)
    return int(flops_per_token(cfg, convention, T)) * batch * T


def pf_days(flops: float) -> float:
    return flops / PF_DAY


# Kaplan's run compute C = 6 N D: 2 FLOPs per parameter per token forward, BACKWARD_FACTOR x that
# backward. Scaling-law fits of external tables and Chinchilla's N_opt = G (C / 6)^a use it.
KAPLAN_FLOPS_PER_PARAM_TOKEN = 2 * (1 + BACKWARD_FACTOR)


def run_compute(N, D):
    """C = 6 N D: training compute (FLOPs) of D tokens on N parameters (arrays welcome)."""
    return KAPLAN_FLOPS_PER_PARAM_TOKEN * N * D


def tokens_from_compute(C, N):
    """D = C / (6 N): tokens of a run of compute C (FLOPs) on N parameters (arrays welcome)."""
    return C / (KAPLAN_FLOPS_PER_PARAM_TOKEN * N)


def params_from_compute(C, D):
    """N = C / (6 D): the parameter count a compute count implies for D tokens, so that any
    convention's C (6N, 6N + context, full model, measured) reads as C = 6 N_eff D."""
    return C / (KAPLAN_FLOPS_PER_PARAM_TOKEN * D)


def attention_overheads(cfg: GPTConfig, spec: ExecSpec, batch: int = 1,
                        seq_len: int | None = None) -> dict[str, float]:
    """How much more attention work `spec` executes than the model count, split into the causal
    block granularity (forward tiles past the exact triangle) and the backward recompute."""
    T = _check_seq_len(cfg, seq_len)
    ex = executed(cfg, batch, T, spec)
    mask = next(r for r in rows(cfg, T) if r.component == "attention: mask")
    model_fwd = batch * T * mask.forward_flops  # exact causal triangle, all layers
    fwd_over = ex.forward["attention"] / model_fwd - 1.0
    bwd_over = ex.backward["attention"] / (2 * ex.forward["attention"]) - 1.0
    return {"causal_block_overhead": fwd_over, "backward_recompute_overhead": bwd_over,
            "attention_executed_over_model": ex.by_group()["attention"] / (3 * model_fwd) - 1.0}


def fmt_flops(x: float) -> str:
    """1234567 -> '1.23 M' (decimal prefixes)."""
    if x == 0:
        return "0"
    e = min(int(math.log10(abs(x)) // 3), 6)
    return f"{x / 10 ** (3 * e):.3g} {' kMGTPE'[e]}".rstrip()


# FlashAttention papers' convention for attention-kernel TFLOP/s (model FLOPs, not executed):
# forward QK^T and PV over the T x T square, 4 B H T^2 D, halved when causal; backward 2.5x the
# forward (2x for dQ, dK, dV plus 0.5x for recomputing QK^T).
ATTENTION_MODES = ("fwd", "bwd", "fwd+bwd")


def attention_model_flops(B: int, H: int, T: int, D: int, causal: bool, mode: str = "fwd") -> int:
    """Model FLOPs of one attention call on (B, H, T, D) in the FlashAttention convention."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; supported: {', '.join(ATTENTION_MODES)}")
    fwd = 4 * B * H * T * T * D // (2 if causal else 1)
    bwd = 5 * fwd // 2
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]
