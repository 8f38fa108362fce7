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
     kaplan_6N_head     6 N + 6 d V              (Kaplan's count plus the head's matmul, the
                        last-layer FLOPs whose omission shifts Kaplan's N_opt exponent)
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
from dataclasses import asdict, dataclass, field, replace

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
RMSNORM_FLOPS = 4        # square, sum, normalise (x rsqrt(mean)), scale
ROPE_FLOPS = 3           # per element of q and k: x cos + rotate_half(x) sin
SILU_FLOPS = 5           # x sigmoid(x): negate, exp, add 1, divide, multiply
GATE_MUL_FLOPS = 1       # act(gate) * up
TOPK_FLOPS = 1           # per router logit and selected expert (a comparison)
BACKWARD_FACTOR = 2  # backward = 2 x forward

CONVENTIONS = ("kaplan_6N", "kaplan_6N_head", "kaplan_6N_context", "palm", "full_model")
# 6 N_active: Kaplan's 6N over the weights a token runs (equal to kaplan_6N without experts)
MOE_CONVENTIONS = ("kaplan_6N_active",)

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
    nonembedding_active: int = 0  # N of the weights one token runs (= nonembedding without MoE)
    active: int = 0               # every parameter one token uses (= total without MoE)

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
    recompute: str = "none"
    hardware_per_token: int | float | None = None  # full_model + recomputed forward (HFU)

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
        } | ({"recompute": self.recompute, "hardware_flops_per_token": self.hardware_per_token}
             if self.recompute != "none" else {})


def _check_seq_len(cfg: GPTConfig, seq_len: int | None) -> int:
    T = cfg.n_ctx if seq_len is None else seq_len
    if not isinstance(T, int) or T <= 0 or T > cfg.n_ctx:
        raise ValueError(f"seq_len must be an int in [1, n_ctx={cfg.n_ctx}], got {seq_len!r}")
    return T


def causal_pairs(T: int, window: int | None = None) -> int:
    """(query, key) pairs a causal mask keeps in a sequence of T tokens: T (T + 1) / 2, or with a
    sliding window of w tokens (each query sees itself and the w - 1 keys before it)
    sum_i min(i + 1, w)."""
    if window is None or window >= T:
        return T * (T + 1) // 2
    return window * (window + 1) // 2 + (T - window) * window


def context_len(cfg: GPTConfig, T: int) -> int:
    """The keys a query can reach: T, or the window when it is shorter (Kaplan's n_ctx term)."""
    return T if cfg.window is None else min(T, cfg.window)


def _per_token(total: int, T: int) -> int | float:
    """A per-sequence count divided by T: an int when exact, else a float."""
    return total // T if total % T == 0 else total / T


def _mlp_shape(cfg: GPTConfig) -> tuple[int, int, int, int, int]:
    """(matrices per MLP, dense blocks, MoE blocks, routed experts a token runs, shared experts)."""
    m = 3 if cfg.gated else 2
    n_dense = cfg.n_dense_layer if cfg.moe else cfg.n_layer
    return m, n_dense, cfg.n_moe_layer, cfg.top_k, cfg.n_shared_expert


def rows(cfg: GPTConfig, seq_len: int | None = None) -> tuple[Row, ...]:
    """Kaplan's rows generalised to this config, and the rows he leaves out, per token at sequence
    length seq_len (see the module docstring, points 1 and 2)."""
    T = _check_seq_len(cfg, seq_len)
    L, d, a, f, V, H = cfg.n_layer, cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_vocab, cfg.n_head
    kv = cfg.d_kv
    B = BACKWARD_FACTOR
    m, n_dense, n_moe, k, S = _mlp_shape(cfg)
    E, de = cfg.n_expert, cfg.expert_width

    def mm(component, params, fwd, kaplan, group):
        return Row(component, params, fwd, B * fwd, kaplan, "matmul", group)

    def ew(component, params, fwd, group="other"):
        return Row(component, params, fwd, B * fwd, None, "elementwise", group)

    pairs = causal_pairs(T, cfg.window)
    learned = cfg.pos == "learned"
    n_ln = 2 * L + 1
    qkv = d * (a + 2 * kv)
    out = [
        Row("embed", (V + (cfg.n_ctx if learned else 0)) * d, EMBED_ADD_FLOPS * d if learned else 0,
            B * EMBED_ADD_FLOPS * d if learned else 0, 4 * d, "elementwise", "other"),
        mm("attention: QKV", L * qkv, 2 * L * qkv, 2 * L * qkv, "qkv"),
        # QK^T and PV over the causal triangle (or window band): 2 products x 2 FLOPs x a per pair
        mm("attention: mask", 0, _per_token(4 * L * a * pairs, T), 2 * L * context_len(cfg, T) * a,
           "attention"),
        mm("attention: project", L * a * d, 2 * L * a * d, 2 * L * a * d, "project"),
        mm("feedforward", n_dense * m * d * f, 2 * n_dense * m * d * f, 2 * n_dense * m * d * f,
           "feedforward"),
    ]
    if cfg.moe:
        if n_dense == 0:
            out.pop()  # no dense feed-forward block
        out += [
            # every expert's weights are parameters; a token runs top_k of them (active FLOPs)
            mm("feedforward: experts", n_moe * E * m * d * de, 2 * n_moe * k * m * d * de,
               2 * n_moe * k * m * d * de, "feedforward"),
        ] + ([mm("feedforward: shared experts", n_moe * S * m * d * de, 2 * n_moe * S * m * d * de,
                 2 * n_moe * S * m * d * de, "feedforward")] if S else []) + [
            mm("router", n_moe * d * E, 2 * n_moe * d * E, 2 * n_moe * d * E, "feedforward"),
        ]
    out.append(mm("de-embed", 0 if cfg.tie_head else V * d, 2 * d * V, 2 * d * V, "de-embed"))
    mlp_b = (m - 1) * f + d                  # up (and gate) + down biases of one dense MLP
    exp_b = (m - 1) * de + d                 # of one expert
    b_params = (L * (a + 2 * kv) * cfg.has_bias("qkv") + L * d * cfg.has_bias("proj")
                + (n_dense * mlp_b + n_moe * (E + S) * exp_b) * cfg.has_bias("mlp"))
    b_flops = (L * (a + 2 * kv) * cfg.has_bias("qkv") + L * d * cfg.has_bias("proj")
               + (n_dense * mlp_b + n_moe * (k + S) * exp_b) * cfg.has_bias("mlp"))
    out.append(ew("biases", b_params, BIAS_FLOPS * b_flops))
    if cfg.norm == "layernorm":
        out.append(ew("layernorms", n_ln * d * (2 if cfg.has_bias("norm") else 1),
                      LAYERNORM_FLOPS * n_ln * d))
    else:
        out.append(ew("rmsnorms", n_ln * d, RMSNORM_FLOPS * n_ln * d))
    if cfg.pos == "rope":
        out.append(ew("rope", 0, ROPE_FLOPS * L * (a + kv)))
    # scores per query and head: pairs / T on average, SOFTMAX_FLOPS each
    out.append(ew("softmax", 0, _per_token(SOFTMAX_FLOPS * L * H * pairs, T)))
    act_width = n_dense * f + n_moe * (k + S) * de   # MLP hidden units a token computes
    if cfg.mlp == "gelu":
        out.append(ew("gelu", 0, GELU_FLOPS * act_width))
    else:
        act = SILU_FLOPS if cfg.mlp == "swiglu" else GELU_FLOPS
        out.append(ew(f"gating ({cfg.mlp})", 0, (act + GATE_MUL_FLOPS) * act_width))
    if cfg.moe:
        per_block = SOFTMAX_FLOPS * E + TOPK_FLOPS * E * k + 2 * k + 2 * (k + S) * d
        out.append(ew("routing", 0, n_moe * per_block))
    out += [
        ew("residual adds", 0, RESIDUAL_FLOPS * 2 * L * d),
        ew("loss (cross-entropy)", 0, CROSS_ENTROPY_FLOPS * V),
    ]
    return tuple(out)


_NONEMB = ("attention: QKV", "attention: project", "feedforward", "feedforward: experts",
           "feedforward: shared experts", "router")


def param_counts(cfg: GPTConfig) -> ParamCounts:
    rs = rows(cfg)
    by = {r.component: r.params for r in rs if r.params}
    nonemb = sum(by.get(k, 0) for k in _NONEMB)
    emb = by.get("embed", 0) + by.get("de-embed", 0)
    other = sum(v for k, v in by.items() if k not in _NONEMB and k not in ("embed", "de-embed"))
    total = nonemb + emb + other
    # per token only top_k of the n_expert routed experts run: the others' weights (and biases)
    # are inactive
    m, _, n_moe, k, _ = _mlp_shape(cfg)
    idle = n_moe * (cfg.n_expert - k)
    idle_w = idle * m * cfg.d_model * cfg.expert_width
    idle_b = idle * ((m - 1) * cfg.expert_width + cfg.d_model) * cfg.has_bias("mlp")
    return ParamCounts(nonemb, emb, other, total, by, nonembedding_active=nonemb - idle_w,
                       active=total - idle_w - idle_b)


from .config import RECOMPUTES as RECOMPUTE  # noqa: E402


def recomputed_forward(cfg: GPTConfig, seq_len: int | None = None, recompute: str = "none"
                       ) -> int | float:
    """Forward FLOPs per token that activation recompute runs again in backward: "full" re-runs the
    forward of every block (all rows but embedding, final norm, head and loss); "selective"
    re-runs the attention core only (QK^T, softmax, PV: the "attention: mask" and softmax rows)."""
    if recompute not in RECOMPUTE:
        raise ValueError(f"unknown recompute {recompute!r}; supported: {', '.join(RECOMPUTE)}")
    if recompute == "none":
        return 0
    rs = {r.component: r for r in rows(cfg, seq_len)}
    if recompute == "selective":
        return rs["attention: mask"].forward_flops + rs["softmax"].forward_flops
    outside = (rs["embed"].forward_flops + rs["de-embed"].forward_flops
               + rs["loss (cross-entropy)"].forward_flops
               + (LAYERNORM_FLOPS if cfg.norm == "layernorm" else RMSNORM_FLOPS) * cfg.d_model)
    return sum(r.forward_flops for r in rs.values()) - outside


def accounting(cfg: GPTConfig, seq_len: int | None = None, recompute: str = "none") -> Accounting:
    """Parameters, Kaplan's Table 1 and every convention's FLOPs per token for one config.

    recompute ("none", "selective", "full") adds `hardware_per_token`, the full-model count plus the
    recomputed forward (for HFU); the model conventions (for MFU) never include it."""
    T = _check_seq_len(cfg, seq_len)
    rs = rows(cfg, T)
    params = param_counts(cfg)
    L, a, H, Q = cfg.n_layer, cfg.d_attn, cfg.n_head, cfg.head_dim
    Tc = context_len(cfg, T)
    N = params.nonembedding
    # nanoGPT: all but the position embedding; with experts only the active parameters
    n_total = (params.active if cfg.moe else params.total) - (
        cfg.n_ctx * cfg.d_model if cfg.pos == "learned" else 0)
    head = cfg.d_model * cfg.n_vocab  # the de-embedding matmul: 2 d V per token forward
    fwd = {
        "kaplan_6N": 2 * N,
        "kaplan_6N_head": 2 * N + 2 * head,
        "kaplan_6N_context": 2 * N + 2 * L * Tc * a,
        "palm": 2 * n_total + 4 * L * H * Q * Tc,
        "full_model": sum(r.forward_flops for r in rs),
        "kaplan_6N_active": 2 * params.nonembedding_active,
    }
    train = {
        "kaplan_6N": 6 * N,
        "kaplan_6N_head": 6 * N + 6 * head,
        "kaplan_6N_context": 6 * N + 6 * L * Tc * a,
        "palm": 6 * n_total + 12 * L * H * Q * Tc,
        "full_model": sum(r.forward_flops + r.backward_flops for r in rs),
        "kaplan_6N_active": 6 * params.nonembedding_active,
    }
    hw = None
    if recompute != "none":
        hw = train["full_model"] + recomputed_forward(cfg, T, recompute)
    return Accounting(cfg, T, rs, params, N, fwd["kaplan_6N_context"], fwd, train, recompute, hw)


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
        raise ValueError(f"unknown convention {convention!r}; known: "
                         f"{', '.join(CONVENTIONS + MOE_CONVENTIONS)}, executed")
    return table[convention]


# --------------------------------------------------------------------------------------------
# Executed FLOPs: what an implementation runs, given how its kernels tile the work.
# --------------------------------------------------------------------------------------------

def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def padded(n: int, block: int | None) -> int:
    return n if block is None else cdiv(n, block) * block


def visited_block_pairs(T: int, block_m: int, block_n: int, causal: bool,
                        window: int | None = None) -> int:
    """Number of (query block, key block) tiles a blocked attention kernel runs for one (b, h).

    A tile (i, j) holds queries [i bm, (i+1) bm) and keys [j bn, (j+1) bn), both clipped to T. It
    is run when it holds at least one unmasked score: always without a mask, and when
    j bn < min((i + 1) bm, T) with a causal mask (some key at or before some query). A sliding
    window of w tokens (causal only) also skips the tiles wholly before it: it runs (i, j) only if
    (j + 1) bn > i bm - w + 1 (some key within w - 1 of some query)."""
    n_m, n_n = cdiv(T, block_m), cdiv(T, block_n)
    if not causal:
        if window is not None:
            raise ValueError("a sliding window needs a causal mask")
        return n_m * n_n
    total = 0
    for i in range(n_m):
        hi = cdiv(min((i + 1) * block_m, T), block_n)
        lo = 0 if window is None else max(0, i * block_m - window + 1) // block_n
        total += hi - lo
    return total


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

    def forward_flops(self, batch: int, n_head: int, T: int, head_dim: int, causal: bool,
                      window: int | None = None) -> int:
        """n_head is the number of query heads (grouped key/value heads change no product)."""
        if not self.blocked:
            return 2 * (2 * batch * n_head * T * T * head_dim)
        D = self.block_d or head_dim
        bm, bn = self.fwd_blocks
        return (batch * n_head * visited_block_pairs(T, bm, bn, causal, window) * self.fwd_dots
                * 2 * bm * bn * D)

    def backward_flops(self, batch: int, n_head: int, T: int, head_dim: int, causal: bool,
                       window: int | None = None) -> int:
        if not self.blocked:
            return 4 * (2 * batch * n_head * T * T * head_dim)
        D = self.block_d or head_dim
        return sum(batch * n_head * visited_block_pairs(T, bm, bn, causal, window) * dots
                   * 2 * bm * bn * D for bm, bn, dots in self.bwd_passes)


@dataclass(frozen=True)
class GemmExec:
    """How a GEMM Y[M, N] = X[M, K] @ W[N, K]^T and its backward are executed.

    Tiles are (rows, cols, reduction) of each product; None means exact 2MNK (cuBLAS, counted by
    shape). recompute=True: the backward re-runs the forward product (pre-activation recompute).
    matrices: weight matrices of shape (N, K) applied to the same X (2 for the gate and up
    products of a gated MLP, fused in one kernel): every product, and its backward, once each."""
    fwd_tiles: tuple[int, int, int] | None = None
    dx_tiles: tuple[int, int, int] | None = None   # dX[M, K] = dY[M, N] @ W[N, K]
    dw_tiles: tuple[int, int, int] | None = None   # dW[N, K] = dY^T[N, M] @ X[M, K]
    recompute: bool = False
    matrices: int = 1

    @staticmethod
    def _mm(rows_: int, cols: int, red: int, tiles) -> int:
        if tiles is None:
            return 2 * rows_ * cols * red
        return 2 * padded(rows_, tiles[0]) * padded(cols, tiles[1]) * padded(red, tiles[2])

    def forward_flops(self, M: int, N: int, K: int) -> int:
        return self.matrices * self._mm(M, N, K, self.fwd_tiles)

    def backward_flops(self, M: int, N: int, K: int) -> int:
        total = self.matrices * (self._mm(M, K, N, self.dx_tiles) + self._mm(N, K, M, self.dw_tiles))
        return total + (self.forward_flops(M, N, K) if self.recompute else 0)


EXACT_GEMM = GemmExec()


@dataclass(frozen=True)
class ExecSpec:
    """The kernel behaviour an executed count depends on. Default: the torch reference."""
    attention: AttentionExec = AttentionExec()
    mlp_up: GemmExec = EXACT_GEMM  # the d_model -> d_ff product(s) (a fused kernel in the triton
                                   # backend); its `matrices` is raised to 2 for a gated MLP if exact
    causal: bool = True
    name: str = "torch"
    recompute: str = "none"        # activation recompute (RECOMPUTE): re-run forward products


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
    """Executed FLOPs of one training step (forward + backward), by group, for `spec`'s kernels.

    Matmul groups are exact for the torch reference (and for sixn's kernels through their tiles).
    Experts: the routed experts run top_k x M token rows in all, whatever the routing (no token is
    dropped), the shared experts M rows each, the router M rows; all on PyTorch (exact GEMMs).
    spec.recompute adds the recomputed forward products to the backward (full: every block
    product; selective: the attention core)."""
    T = _check_seq_len(cfg, seq_len)
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    if spec.recompute not in RECOMPUTE:
        raise ValueError(f"unknown recompute {spec.recompute!r}; supported: {', '.join(RECOMPUTE)}")
    L, d, a, f, V, H = cfg.n_layer, cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_vocab, cfg.n_head
    M = batch * T  # tokens in the step
    at = spec.attention
    m, n_dense, n_moe, k, S = _mlp_shape(cfg)
    n_up = m - 1
    up = spec.mlp_up
    if up.matrices != n_up:
        if up.fwd_tiles is not None:
            raise ValueError(f"ExecSpec.mlp_up runs {up.matrices} matrices, a {cfg.mlp} MLP has {n_up}")
        up = replace(up, matrices=n_up)
    de, E = cfg.expert_width, cfg.n_expert
    expert_rows = (k + S) * M
    fwd = {
        "qkv": L * 2 * M * d * (a + 2 * cfg.d_kv),
        "attention": L * at.forward_flops(batch, H, T, cfg.head_dim, spec.causal, cfg.window),
        "project": L * 2 * M * a * d,
        "feedforward": (n_dense * (up.forward_flops(M, f, d) + 2 * M * f * d)
                        + n_moe * (2 * expert_rows * m * d * de + 2 * M * d * E)),
        "de-embed": 2 * M * d * V,
    }
    bwd = {
        "qkv": 2 * fwd["qkv"],
        "attention": L * at.backward_flops(batch, H, T, cfg.head_dim, spec.causal, cfg.window),
        "project": 2 * fwd["project"],
        "feedforward": (n_dense * (up.backward_flops(M, f, d) + 2 * 2 * M * f * d)
                        + 2 * n_moe * (2 * expert_rows * m * d * de + 2 * M * d * E)),
        "de-embed": 2 * fwd["de-embed"],
    }
    if spec.recompute == "full":
        for g in ("qkv", "attention", "project", "feedforward"):
            bwd[g] += fwd[g]
    elif spec.recompute == "selective":
        bwd["attention"] += fwd["attention"]
    rs = rows(cfg, T)
    ew = [r for r in rs if r.kind == "elementwise"]
    fwd["other"] = M * sum(r.forward_flops for r in ew)
    bwd["other"] = M * sum(r.backward_flops for r in ew)
    if spec.recompute != "none":
        mm_fwd = sum(r.forward_flops for r in rs if r.kind == "matmul")
        bwd["other"] += M * (recomputed_forward(cfg, T, spec.recompute) - (
            mm_fwd - rows_dict(rs)["de-embed"].forward_flops if spec.recompute == "full"
            else rows_dict(rs)["attention: mask"].forward_flops))
    fwd["other"], bwd["other"] = _int_if_whole(fwd["other"]), _int_if_whole(bwd["other"])
    return Executed(batch, T, fwd, bwd, spec.name)


def rows_dict(rs) -> dict[str, Row]:
    return {r.component: r for r in rs}


def _int_if_whole(x):
    return int(round(x)) if abs(x - round(x)) < 1e-6 * max(1.0, abs(x)) else x


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
