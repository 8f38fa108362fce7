"""Fused scaled-dot-product attention (FlashAttention-2 style), forward and backward, in Triton.

    out = softmax(scale * q k^T + mask) v        q, k, v, out: (B, H, T, D); mask causal or none

Algorithm (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning"; the Triton fused-attention tutorial is prior art, this is written anew):
- forward: one program per (query block of BLOCK_M rows, batch x head). It streams the key/value
  blocks of BLOCK_N rows through an online softmax kept in fp32 (running max m, running sum l,
  unnormalised accumulator), with log2(e) folded into the scale so every exponential is an exp2.
  It writes out and the natural-log logsumexp lse = log(sum_j exp(s_ij)) of each query row.
- backward: a small preprocess kernel computes delta = rowsum(dO * O) (minus the incoming gradient
  of lse, if any); then two kernels recompute the probabilities P = exp(S - lse) from q, k and lse:
  one per key block accumulates dK and dV over query blocks (4 block products per tile: K Q^T,
  P^T dO, V dO^T, dS^T Q), one per query block accumulates dQ over key blocks (3 products: Q K^T,
  dO V^T, dS K). No atomics, so results are deterministic.
- causal: tiles that lie entirely above the diagonal are skipped (their loops never reach them);
  a tile (i, j) of query block i and key block j is run iff j*BLOCK_N < min((i+1)*BLOCK_M, T),
  exactly model.flops.visited_block_pairs. The diagonal tiles are run whole and masked; tiles
  wholly below the diagonal run without a mask. The diagonal is never split into sub-blocks.

Block sizes are a deterministic function of (T, D, dtype, device) (`kernel_config`), and
`attention_exec` describes exactly the tiles and block products the launched kernels run, as a
model.flops.AttentionExec, so analytic, dispatcher (FlopCounterMode) and interpreter counts of
the executed FLOPs agree exactly.

Public API: `attention(q, k, v, causal=True, sm_scale=None)` goes through the torch.library
custom ops "sixn::attention_fwd" -> (out, lse) and "sixn::attention_bwd" -> (dq, dk, dv), with
fake (meta) implementations, autograd and FLOP formulas registered, so it works under
torch.compile and FlopCounterMode counts what the kernels execute.

Grouped-query attention: k and v may have H_kv heads, H_kv dividing H; query head h reads key/value
head h // (H / H_kv) in place (no repeated K/V in memory). The dK/dV pass runs one program per
(key block, key/value head) and sums over the query heads of its group in a loop (still no
atomics). Sliding window (causal only): query i sees keys i - window + 1 .. i; key tiles wholly
before the window are skipped (forward and dQ start at the tile of the block's first row's first
key, the dK/dV pass stops at the last query tile within reach), and all visited tiles are masked;
model.flops.visited_block_pairs(..., window) counts exactly these tiles.

Supported: q (B, H, T, D) and k, v (B, H_kv, T, D) (no cross-attention), any T >= 1
(ragged ends masked), head dims D from 1 to 256 (D is padded with masks to BLOCK_D = the next
power of two >= 16; 16, 32, 64 and 128 are tested, as are padded ones such as 40), dtypes
float16, bfloat16 and float32 (fp32 accumulators and softmax always; fp32 inputs use IEEE fp32
products under torch's default float32 matmul precision "highest", TF32 otherwise: runtime.dot_policy,
the policy of every sixn kernel), any strides (inputs are read in place, e.g. (B, T, H, D) views transposed to
(B, H, T, D)). Offsets of the (batch, head) and row blocks are int64, so B*H*T*D may pass 2^31;
offsets inside one tile are int32 (a row stride below 2^24 elements). Outputs and gradients are
contiguous (B, H, T, D); lse is contiguous fp32 (B, H, T).

Caution: CPU tensors run only in the Triton interpreter (TRITON_INTERPRET=1 before triton is
imported), slowly; the interpreter computes bf16 block products by upcasting to fp32 (its bf16
tl.dot is wrong in triton 3.9), which changes no FLOP count. The CUDA block sizes were chosen for
an H100 without a GPU (no autotuning, no timing): only checked to compile for sm_90 without
register spills (triton 3.9, contiguous inputs). As in FlashAttention-2, delta = rowsum(dO * O)
uses the output rounded to the input dtype, so bf16/fp16 gradients of rows with few keys carry
an extra error of about one rounding of O (tests allow 2x PyTorch's own low-precision error
plus two roundings). No dropout, no attention bias, no key padding mask, no sequence packing.
The gradient of lse is supported (it enters delta).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from sixn.model.flops import AttentionExec

from .blocks import dot
from .runtime import Tiles, check_device, check_dtype, check_dtype_supported, check_tensors, dot_policy

LOG2E = 1.4426950408889634  # 1/ln(2): exp(x) = exp2(x * LOG2E)
MAX_HEAD_DIM = 256


# --------------------------------------------------------------------------------------------
# Block sizes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttentionConfig:
    """The tiles of the three passes (runtime.Tiles): block_m query rows, block_n key rows, block_k
    the head dim padded to a power of two >= 16 (the reduction of Q K^T, the same in every pass)."""
    fwd: Tiles            # forward
    dkdv: Tiles           # backward, dK/dV pass (one program per key block)
    dq: Tiles             # backward, dQ pass (one program per query block)

    @property
    def block_d(self) -> int:
        """The padded head dim (BLOCK_D of the kernels)."""
        return self.fwd.block_k


def _pow2_at_least(n: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(n))


def _on_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def kernel_config(T: int, head_dim: int, dtype: torch.dtype, device) -> AttentionConfig:
    """The block sizes the launchers use, a deterministic function of (T, D, dtype, device)."""
    _check_dims(T, head_dim)
    check_dtype_supported("attention", dtype)
    bd = _pow2_at_least(head_dim)

    def tiles(block_m: int, block_n: int, num_warps: int = 4, num_stages: int = 2) -> Tiles:
        return Tiles(block_m, block_n, bd, num_warps, num_stages)

    if not _on_cuda(device):
        # Triton interpreter: small tiles keep the CPU tests fast and exercise several tiles per
        # row; unequal block_m / block_n exercise the general causal rule.
        return AttentionConfig(tiles(32, 16), tiles(16, 32), tiles(32, 16))
    # H100 / H200 (sm_90). Not autotuned (no GPU was at hand): chosen so that every configuration
    # compiles for sm_90 without spilling registers, checked offline with Triton's compiler and
    # ptxas (`sixn kernels --aot sm_90`, triton 3.6 and 3.9), with the Triton tutorial's Hopper
    # shapes where they fit. 16-bit: wgmma tensor-core products. fp32 runs IEEE products on the
    # CUDA cores (slow, exact), hence its small tiles. Warps and stages never change the tiles,
    # so never the executed FLOPs (attention_exec).
    padded = head_dim != bd
    if dtype == torch.float32:
        if bd <= 64:  # dK/dV pipelined and dQ 32 x 32 spill on ragged T or padded D
            fwd, dkdv, dq = tiles(64, 32, 8, 2), tiles(16, 32, 8, 1), tiles(32, 16, 8, 2)
            if padded:  # 64 x 32 spills 32-80 B with the head-dim masks
                fwd = tiles(64, 16, 8, 1)
        elif bd == 128:
            fwd, dkdv, dq = tiles(32, 16, 8, 2), tiles(16, 16, 8, 2), tiles(32, 16, 8, 2)
        else:
            fwd, dkdv, dq = tiles(16, 16, 8, 1), tiles(16, 16, 8, 1), tiles(16, 16, 8, 1)
    else:
        if bd <= 64:
            fwd, dkdv, dq = tiles(128, 64, 4, 3), tiles(32, 128, 8, 3), tiles(128, 32, 4, 4)
            if padded:  # the head-dim masks hold more registers: 4 warps spill 300-900 B
                fwd, dq = tiles(128, 64, 8, 3), tiles(128, 32, 8, 4)
        elif bd == 128:  # dK/dV 32 x 64 spills 100-150 B with grouped heads (GQA)
            fwd, dkdv, dq = tiles(128, 64, 8, 3), tiles(32, 32, 8, 3), tiles(64, 32, 4, 3)
        else:
            fwd, dkdv, dq = tiles(64, 16, 8, 2), tiles(32, 32, 8, 2), tiles(32, 16, 8, 2)
    # Short sequences: no block larger than the sequence (rounded up to a power of two >= 16);
    # a 16-bit tile clamped to 32 x 32 or less runs with at most 4 warps (8 spill on it; fp32's
    # CUDA-core products need the 8).
    cap = _pow2_at_least(T)

    def clamp(p: Tiles) -> Tiles:
        bm, bn = min(p.block_m, cap), min(p.block_n, cap)
        shrunk = (bm, bn) != (p.block_m, p.block_n)
        small = shrunk and bm * bn <= 32 * 32 and dtype != torch.float32
        warps = min(p.num_warps, 4) if small else p.num_warps
        return dataclasses.replace(p, block_m=bm, block_n=bn, num_warps=warps)

    return AttentionConfig(clamp(fwd), clamp(dkdv), clamp(dq))


def attention_exec(T: int, head_dim: int, dtype: torch.dtype, device) -> AttentionExec:
    """What the launched kernels execute at this shape, for model.flops: forward tiles of
    kernel_config(...).fwd with 2 block products each (Q K^T, P V); backward a dK/dV pass with
    4 products per tile and a dQ pass with 3, every product (block_m x block_n x block_d)."""
    cfg = kernel_config(T, head_dim, dtype, device)
    return AttentionExec(
        blocked=True,
        fwd_blocks=(cfg.fwd.block_m, cfg.fwd.block_n),
        fwd_dots=2,
        bwd_passes=((cfg.dkdv.block_m, cfg.dkdv.block_n, 4), (cfg.dq.block_m, cfg.dq.block_n, 3)),
        block_d=cfg.block_d,
    )


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, offs_m, offs_n, offs_d, d_ok,
                    K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                    lo, hi, T, qk_scale,
                    MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                    BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                    WINDOW: tl.constexpr):
    """Online softmax over the key blocks starting at key rows lo, lo + BLOCK_N, ... < hi."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_k = start_n + offs_n                                          # key rows of the tile
        row0 = tl.cast(start_n, tl.int64)                   # int64 row offset, int32 in the tile
        kT_ptrs = K_bh + row0 * stride_kt + (offs_n[None, :] * stride_kt + offs_d[:, None] * stride_kd)
        v_ptrs = V_bh + row0 * stride_vt + (offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd)
        if MASK:
            k_ok = offs_k < T
            kT = tl.load(kT_ptrs, mask=k_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
            v = tl.load(v_ptrs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)    # (N, D)
        elif not EVEN_D:
            kT = tl.load(kT_ptrs, mask=d_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        else:
            kT = tl.load(kT_ptrs)
            v = tl.load(v_ptrs)
        s = dot(q, kT, None, PRECISION, UPCAST) * qk_scale                       # (M, N), log2 units
        if MASK:
            keep = k_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_k[None, :] <= offs_m[:, None])
            if WINDOW > 0:
                keep = keep & (offs_m[:, None] - offs_k[None, :] < WINDOW)
            s = tl.where(keep, s, float("-inf"))
        # Without a window the first tile of every row holds an unmasked key (key 0 or the tile
        # at the row's block start), so m_new is finite from then on. With a window a row may
        # see no key of its first tiles: a stand-in max of 0 there keeps exp2(-inf - m) = 0.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if WINDOW > 0:
            m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)                                  # rescale old terms
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, None, PRECISION, UPCAST)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["T"])
def _attn_fwd(
    # pointers
    Q, K, V, O, LSE,
    # strides (elements)
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    # sizes and scale
    H, T, D, qk_scale,
    # meta-parameters
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
    GROUP: tl.constexpr, WINDOW: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    off_hk = off_h // GROUP                                   # key/value head of this query head
    Q_bh = Q + off_b * stride_qb + off_h * stride_qh
    K_bh = K + off_b * stride_kb + off_hk * stride_kh
    V_bh = V + off_b * stride_vb + off_hk * stride_vh
    O_bh = O + off_b * stride_ob + off_h * stride_oh
    LSE_bh = LSE + pid_bh.to(tl.int64) * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m_ok = offs_m < T

    q_ptrs = Q_bh + offs_m[:, None].to(tl.int64) * stride_qt + offs_d[None, :] * stride_qd
    if EVEN_M and EVEN_D:
        q = tl.load(q_ptrs)
    else:
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Key tiles [first, lo) need no mask; [lo, hi) hold the diagonal (causal) or the ragged end.
    # A window starts at the tile of the block's first row's first key and masks every tile.
    first = 0
    if CAUSAL:
        lo = (start_m // BLOCK_N) * BLOCK_N                   # tiles wholly below the diagonal
        hi = tl.minimum(start_m + BLOCK_M, T)                 # last key any row of the block sees
        if WINDOW > 0:
            first = (tl.maximum(start_m - WINDOW + 1, 0) // BLOCK_N) * BLOCK_N
            lo = first
    else:
        lo = (T // BLOCK_N) * BLOCK_N
        hi = T
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, offs_m, offs_n, offs_d, d_ok,
                                    K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                                    first, lo, T, qk_scale, False, CAUSAL, EVEN_D,
                                    BLOCK_N, PRECISION, UPCAST, WINDOW)
    acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, offs_m, offs_n, offs_d, d_ok,
                                    K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                                    lo, hi, T, qk_scale, True, CAUSAL, EVEN_D,
                                    BLOCK_N, PRECISION, UPCAST, WINDOW)

    if WINDOW > 0:  # padding rows past T may see no key in the window: not stored, kept finite
        l_i = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_i[:, None]
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453     # ln(2): back to natural log
    o_ptrs = O_bh + offs_m[:, None].to(tl.int64) * stride_ot + offs_d[None, :] * stride_od
    if EVEN_M and EVEN_D:
        tl.store(o_ptrs, out.to(O.dtype.element_ty))
    else:
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    if EVEN_M:
        tl.store(LSE_bh + offs_m, lse)
    else:
        tl.store(LSE_bh + offs_m, lse, mask=m_ok)


@triton.jit(do_not_specialize=["T"])
def _attn_bwd_preprocess(
    # pointers
    O, DO, DLSE, DELTA,
    # strides
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_dob, stride_doh, stride_dot, stride_dod,
    # sizes
    H, T, D,
    # meta-parameters
    HAS_DLSE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """delta_i = sum_d dO_id O_id - dlse_i (fp32, no block product)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < T
    mask = m_ok[:, None] & (offs_d < D)[None, :]
    rows = offs_m[:, None].to(tl.int64)
    o = tl.load(O + off_b * stride_ob + off_h * stride_oh + rows * stride_ot
                + offs_d[None, :] * stride_od, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + rows * stride_dot
                 + offs_d[None, :] * stride_dod, mask=mask, other=0.0).to(tl.float32)
    delta = tl.sum(o * do, 1)
    row_base = pid_bh.to(tl.int64) * T
    if HAS_DLSE:
        delta -= tl.load(DLSE + row_base + offs_m, mask=m_ok, other=0.0)
    tl.store(DELTA + row_base + offs_m, delta, mask=m_ok)


# Backward. With S = scale Q K^T (scores), P = softmax(S) row-wise, O = P V and lse_i = log
# sum_j exp(S_ij) (incoming gradients dO and g = dL/dlse):
#     dV    = P^T dO
#     dP    = dO V^T
#     dS_ij = P_ij (dP_ij - delta_i),   delta_i = sum_j P_ij dP_ij - g_i = rowsum(dO * O)_i - g_i
#             (softmax Jacobian; d lse_i / d S_ij = P_ij adds the g term)
#     dQ    = scale dS K
#     dK    = scale dS^T Q
# P is recomputed tile by tile as exp2(S log2(e) - lse log2(e)); masked scores get P = 0.

@triton.jit
def _attn_bwd_dkdv_inner(dk, dv, k, v, offs_n, offs_mb, offs_d, d_ok,
                         Q_bh, DO_bh, LSE_bh, DELTA_bh,
                         stride_qt, stride_qd, stride_dot, stride_dod,
                         lo, hi, T, qk_scale,
                         MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                         BLOCK_M: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                         WINDOW: tl.constexpr):
    """Accumulate dK, dV of one key block over the query blocks at rows lo, lo + BLOCK_M, ... < hi."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_mb                                         # query rows of the tile
        row0 = tl.cast(start_m, tl.int64)
        qT_ptrs = Q_bh + row0 * stride_qt + (offs_mb[None, :] * stride_qt + offs_d[:, None] * stride_qd)
        do_ptrs = DO_bh + row0 * stride_dot + (offs_mb[:, None] * stride_dot + offs_d[None, :] * stride_dod)
        if MASK:
            m_ok = offs_m < T
            qT = tl.load(qT_ptrs, mask=m_ok[None, :] & d_ok[:, None], other=0.0)  # (D, M)
            do = tl.load(do_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # (M, D)
            lse = tl.load(LSE_bh + offs_m, mask=m_ok, other=0.0)
            delta = tl.load(DELTA_bh + offs_m, mask=m_ok, other=0.0)
        else:
            if not EVEN_D:
                qT = tl.load(qT_ptrs, mask=d_ok[:, None], other=0.0)
                do = tl.load(do_ptrs, mask=d_ok[None, :], other=0.0)
            else:
                qT = tl.load(qT_ptrs)
                do = tl.load(do_ptrs)
            lse = tl.load(LSE_bh + offs_m)
            delta = tl.load(DELTA_bh + offs_m)
        sT = dot(k, qT, None, PRECISION, UPCAST)                                 # (N, M) = (Q K^T)^T
        pT = tl.math.exp2(sT * qk_scale - lse[None, :] * 1.4426950408889634)
        if MASK:
            keep = m_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_m[None, :] >= offs_n[:, None])
            if WINDOW > 0:
                keep = keep & (offs_m[None, :] - offs_n[:, None] < WINDOW)
            pT = tl.where(keep, pT, 0.0)
        dv += dot(pT.to(do.dtype), do, None, PRECISION, UPCAST)                  # P^T dO
        dpT = dot(v, tl.trans(do), None, PRECISION, UPCAST)                      # (dO V^T)^T
        dsT = pT * (dpT - delta[None, :])
        dk += dot(dsT.to(qT.dtype), tl.trans(qT), None, PRECISION, UPCAST)       # dS^T Q (unscaled)
    return dk, dv


@triton.jit(do_not_specialize=["T"])
def _attn_bwd_dkdv(
    # pointers
    Q, K, V, DO, LSE, DELTA, DK, DV,
    # strides (DK and DV share one contiguous layout)
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_gb, stride_gh, stride_gt, stride_gd,
    # sizes and scales
    H, T, D, sm_scale, qk_scale,
    # meta-parameters
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
    GROUP: tl.constexpr, WINDOW: tl.constexpr,
):
    """One key block of one key/value head: dK, dV summed over the GROUP query heads it serves."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)                                 # batch x key/value head
    H_kv = H // GROUP
    off_b = (pid_bh // H_kv).to(tl.int64)
    off_hk = (pid_bh % H_kv).to(tl.int64)
    K_bh = K + off_b * stride_kb + off_hk * stride_kh
    V_bh = V + off_b * stride_vb + off_hk * stride_vh
    G_off = off_b * stride_gb + off_hk * stride_gh

    start_n = pid_n * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_mb = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    n_ok = offs_n < T
    rows = offs_n[:, None].to(tl.int64)
    k_ptrs = K_bh + rows * stride_kt + offs_d[None, :] * stride_kd
    v_ptrs = V_bh + rows * stride_vt + offs_d[None, :] * stride_vd
    if EVEN_N and EVEN_D:
        k = tl.load(k_ptrs)
        v = tl.load(v_ptrs)
    else:
        k = tl.load(k_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # Query tiles [lo, mid) hold the diagonal (masked), [mid, full) lie wholly below it, and
    # [max(mid, full), end) is the ragged last tile (masked). Causal: lo is the first query tile
    # with a row at or after this block's first key, so tiles above the diagonal are skipped.
    # A window ends at the last query tile holding a row within WINDOW - 1 of one of the block's
    # keys, and every tile is masked.
    end = ((T + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    full = (T // BLOCK_M) * BLOCK_M
    if CAUSAL:
        lo = (start_n // BLOCK_M) * BLOCK_M
        mid = tl.minimum(((start_n + BLOCK_N + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, end)
        if WINDOW > 0:
            end = tl.minimum(((start_n + BLOCK_N - 1 + WINDOW + BLOCK_M - 1) // BLOCK_M) * BLOCK_M,
                             end)
            mid = end
            full = end
    else:
        lo = 0
        mid = 0
    for g in range(GROUP):
        off_h = off_hk * GROUP + g
        Q_bh = Q + off_b * stride_qb + off_h * stride_qh
        DO_bh = DO + off_b * stride_dob + off_h * stride_doh
        LSE_bh = LSE + (off_b * H + off_h) * T
        DELTA_bh = DELTA + (off_b * H + off_h) * T
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, offs_n, offs_mb, offs_d, d_ok,
                                      Q_bh, DO_bh, LSE_bh, DELTA_bh,
                                      stride_qt, stride_qd, stride_dot, stride_dod,
                                      lo, mid, T, qk_scale, True, CAUSAL, EVEN_D,
                                      BLOCK_M, PRECISION, UPCAST, WINDOW)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, offs_n, offs_mb, offs_d, d_ok,
                                      Q_bh, DO_bh, LSE_bh, DELTA_bh,
                                      stride_qt, stride_qd, stride_dot, stride_dod,
                                      mid, full, T, qk_scale, False, CAUSAL, EVEN_D,
                                      BLOCK_M, PRECISION, UPCAST, WINDOW)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, offs_n, offs_mb, offs_d, d_ok,
                                      Q_bh, DO_bh, LSE_bh, DELTA_bh,
                                      stride_qt, stride_qd, stride_dot, stride_dod,
                                      tl.maximum(mid, full), end, T, qk_scale, True, CAUSAL, EVEN_D,
                                      BLOCK_M, PRECISION, UPCAST, WINDOW)
    dk *= sm_scale
    g_ptrs = rows * stride_gt + offs_d[None, :] * stride_gd + G_off
    if EVEN_N and EVEN_D:
        tl.store(DK + g_ptrs, dk.to(DK.dtype.element_ty))
        tl.store(DV + g_ptrs, dv.to(DV.dtype.element_ty))
    else:
        g_mask = n_ok[:, None] & d_ok[None, :]
        tl.store(DK + g_ptrs, dk.to(DK.dtype.element_ty), mask=g_mask)
        tl.store(DV + g_ptrs, dv.to(DV.dtype.element_ty), mask=g_mask)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, offs_m, offs_nb, offs_d, d_ok,
                       K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                       lo, hi, T, qk_scale,
                       MASK: tl.constexpr, CAUSAL: tl.constexpr, EVEN_D: tl.constexpr,
                       BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                       WINDOW: tl.constexpr):
    """Accumulate dQ of one query block over the key blocks at rows lo, lo + BLOCK_N, ... < hi."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_k = start_n + offs_nb
        row0 = tl.cast(start_n, tl.int64)
        kT_ptrs = K_bh + row0 * stride_kt + (offs_nb[None, :] * stride_kt + offs_d[:, None] * stride_kd)
        vT_ptrs = V_bh + row0 * stride_vt + (offs_nb[None, :] * stride_vt + offs_d[:, None] * stride_vd)
        if MASK:
            k_ok = offs_k < T
            kT = tl.load(kT_ptrs, mask=k_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
            vT = tl.load(vT_ptrs, mask=k_ok[None, :] & d_ok[:, None], other=0.0)  # (D, N)
        elif not EVEN_D:
            kT = tl.load(kT_ptrs, mask=d_ok[:, None], other=0.0)
            vT = tl.load(vT_ptrs, mask=d_ok[:, None], other=0.0)
        else:
            kT = tl.load(kT_ptrs)
            vT = tl.load(vT_ptrs)
        s = dot(q, kT, None, PRECISION, UPCAST)                                  # (M, N)
        p = tl.math.exp2(s * qk_scale - lse[:, None])                      # lse in log2 units
        if MASK:
            keep = k_ok[None, :]
            if CAUSAL:
                keep = keep & (offs_k[None, :] <= offs_m[:, None])
            if WINDOW > 0:
                keep = keep & (offs_m[:, None] - offs_k[None, :] < WINDOW)
            p = tl.where(keep, p, 0.0)
        dp = dot(do, vT, None, PRECISION, UPCAST)                                # dO V^T
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(kT.dtype), tl.trans(kT), None, PRECISION, UPCAST)        # dS K (unscaled)
    return dq


@triton.jit(do_not_specialize=["T"])
def _attn_bwd_dq(
    # pointers
    Q, K, V, DO, LSE, DELTA, DQ,
    # strides (DQ contiguous-like layout given by stride_g*)
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_dob, stride_doh, stride_dot, stride_dod,
    stride_gb, stride_gh, stride_gt, stride_gd,
    # sizes and scales
    H, T, D, sm_scale, qk_scale,
    # meta-parameters
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr,
    GROUP: tl.constexpr, WINDOW: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    off_hk = off_h // GROUP
    Q_bh = Q + off_b * stride_qb + off_h * stride_qh
    K_bh = K + off_b * stride_kb + off_hk * stride_kh
    V_bh = V + off_b * stride_vb + off_hk * stride_vh
    DO_bh = DO + off_b * stride_dob + off_h * stride_doh
    LSE_bh = LSE + pid_bh.to(tl.int64) * T
    DELTA_bh = DELTA + pid_bh.to(tl.int64) * T

    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_nb = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    m_ok = offs_m < T
    rows = offs_m[:, None].to(tl.int64)
    q_ptrs = Q_bh + rows * stride_qt + offs_d[None, :] * stride_qd
    do_ptrs = DO_bh + rows * stride_dot + offs_d[None, :] * stride_dod
    if EVEN_M and EVEN_D:
        q = tl.load(q_ptrs)
        do = tl.load(do_ptrs)
    else:
        q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
        do = tl.load(do_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if EVEN_M:
        lse = tl.load(LSE_bh + offs_m) * 1.4426950408889634
        delta = tl.load(DELTA_bh + offs_m)
    else:
        lse = tl.load(LSE_bh + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA_bh + offs_m, mask=m_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Same key tiles as the forward: [first, lo) unmasked, [lo, hi) diagonal or ragged end.
    first = 0
    if CAUSAL:
        lo = (start_m // BLOCK_N) * BLOCK_N
        hi = tl.minimum(start_m + BLOCK_M, T)
        if WINDOW > 0:
            first = (tl.maximum(start_m - WINDOW + 1, 0) // BLOCK_N) * BLOCK_N
            lo = first
    else:
        lo = (T // BLOCK_N) * BLOCK_N
        hi = T
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, offs_m, offs_nb, offs_d, d_ok,
                            K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                            first, lo, T, qk_scale, False, CAUSAL, EVEN_D, BLOCK_N, PRECISION, UPCAST,
                            WINDOW)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, offs_m, offs_nb, offs_d, d_ok,
                            K_bh, V_bh, stride_kt, stride_kd, stride_vt, stride_vd,
                            lo, hi, T, qk_scale, True, CAUSAL, EVEN_D, BLOCK_N, PRECISION, UPCAST,
                            WINDOW)
    dq *= sm_scale
    g_ptrs = DQ + off_b * stride_gb + off_h * stride_gh + rows * stride_gt + offs_d[None, :] * stride_gd
    if EVEN_M and EVEN_D:
        tl.store(g_ptrs, dq.to(DQ.dtype.element_ty))
    else:
        tl.store(g_ptrs, dq.to(DQ.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

def _check_dims(T: int, head_dim: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"attention: sequence length T must be an int >= 1, got {T!r}")
    if not isinstance(head_dim, int) or isinstance(head_dim, bool) or not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"attention: head dim {head_dim!r} is not supported; supported: 1 to "
                         f"{MAX_HEAD_DIM} (16, 32, 64, 128 natively, others padded to the next "
                         f"power of two >= 16)")


def _check_layout(q, k, v) -> None:
    """Ranks, matching shapes and dtypes (what a fake tensor with symbolic sizes can be asked)."""
    check_tensors("attention", q=q, k=k, v=v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: {name} must be 4-D (B, H, T, D), got {t.dim()}-D shape "
                             f"{tuple(t.shape)}")
    B, H, T, D = q.shape
    Hk = k.shape[1]
    if k.shape != v.shape or (k.shape[0], k.shape[2], k.shape[3]) != (B, T, D) or Hk < 1 or H % Hk:
        raise ValueError(f"attention: q must be (B, H, T, D) and k, v one shape (B, H_kv, T, D) with "
                         f"H_kv dividing H (grouped-query attention), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}; cross-attention is not supported")
    check_dtype("attention", q, k, v)


def _check_window(window: int, causal: bool) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"attention: window must be an int >= 1, or 0 / None for none, got {window!r}")
    if window and not causal:
        raise ValueError("attention: a sliding window needs causal=True")


def check_inputs(q, k, v, causal=True, sm_scale=None) -> None:
    """Raise ValueError naming what is wrong with attention's inputs, and what is supported."""
    _check_layout(q, k, v)
    B, H, T, D = q.shape
    if B < 1 or H < 1:
        raise ValueError(f"attention: empty batch or head dimension in shape {tuple(q.shape)}; "
                         f"need B >= 1 and H >= 1")
    _check_dims(T, D)
    check_device("attention", q, k, v)
    if not isinstance(causal, bool):
        raise ValueError(f"attention: causal must be a bool, got {causal!r}")
    if sm_scale is not None and (isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float))
                                 or not math.isfinite(sm_scale) or sm_scale <= 0):
        raise ValueError(f"attention: sm_scale must be a finite float > 0 or None "
                         f"(None = 1/sqrt(head dim)), got {sm_scale!r}")


def _strides(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(t.stride())


def _fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
         sm_scale: float, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    check_inputs(q, k, v, causal, sm_scale)
    _check_window(window, causal)
    B, H, T, D = q.shape
    cfg = kernel_config(T, D, q.dtype, q.device)
    out = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
    p = cfg.fwd
    grid = (triton.cdiv(T, p.block_m), B * H)
    _attn_fwd[grid](
        q, k, v, out, lse,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        H, T, D, sm_scale * LOG2E,
        CAUSAL=causal, BLOCK_M=p.block_m, BLOCK_N=p.block_n, BLOCK_D=cfg.block_d,
        EVEN_M=T % p.block_m == 0, EVEN_D=D == cfg.block_d,
        **dot_policy(q.dtype, q.device).constexprs(),
        GROUP=H // k.shape[1], WINDOW=window,
        num_warps=p.num_warps, num_stages=p.num_stages,
    )
    return out, lse


def _bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
         lse: torch.Tensor, dlse: torch.Tensor | None, causal: bool,
         sm_scale: float, window: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_inputs(q, k, v, causal, sm_scale)
    _check_window(window, causal)
    B, H, T, D = q.shape
    Hk = k.shape[1]
    for name, t in (("grad_out", do), ("out", out)):
        if t.shape != q.shape or t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"attention backward: {name} must match q ({tuple(q.shape)}, {q.dtype}, "
                             f"{q.device}), got ({tuple(t.shape)}, {t.dtype}, {t.device})")
    lse = lse.float().contiguous()
    if dlse is not None:
        dlse = dlse.float().contiguous()
    cfg = kernel_config(T, D, q.dtype, q.device)
    delta = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
    pre_m = cfg.dq.block_m
    _attn_bwd_preprocess[(triton.cdiv(T, pre_m), B * H)](
        out, do, dlse if dlse is not None else delta, delta,
        *_strides(out), *_strides(do), H, T, D,
        HAS_DLSE=dlse is not None, BLOCK_M=pre_m, BLOCK_D=cfg.block_d,
    )
    dq = torch.empty((B, H, T, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, Hk, T, D), dtype=q.dtype, device=q.device)
    dv = torch.empty_like(dk)
    common = dict(**dot_policy(q.dtype, q.device).constexprs(), BLOCK_D=cfg.block_d,
                  EVEN_D=D == cfg.block_d,
                  CAUSAL=causal, GROUP=H // Hk, WINDOW=window)
    p = cfg.dkdv
    _attn_bwd_dkdv[(triton.cdiv(T, p.block_n), B * Hk)](
        q, k, v, do, lse, delta, dk, dv,
        *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk),
        H, T, D, sm_scale, sm_scale * LOG2E,
        BLOCK_M=p.block_m, BLOCK_N=p.block_n, EVEN_N=T % p.block_n == 0,
        num_warps=p.num_warps, num_stages=p.num_stages, **common,
    )
    p = cfg.dq
    _attn_bwd_dq[(triton.cdiv(T, p.block_m), B * H)](
        q, k, v, do, lse, delta, dq,
        *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq),
        H, T, D, sm_scale, sm_scale * LOG2E,
        BLOCK_M=p.block_m, BLOCK_N=p.block_n, EVEN_M=T % p.block_m == 0,
        num_warps=p.num_warps, num_stages=p.num_stages, **common,
    )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# torch.library custom ops, autograd and FLOP formulas
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("sixn::attention_fwd", mutates_args=())
def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                  sm_scale: float, window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): out (B, H, T, D) in q's dtype, lse (B, H, T) fp32 natural-log logsumexp.
    k, v (B, H_kv, T, D); window 0 = full causal (or no mask)."""
    return _fwd(q, k, v, causal, sm_scale, window)


@attention_fwd.register_fake
def _attention_fwd_fake(q, k, v, causal, sm_scale, window=0):
    _check_layout(q, k, v)  # sizes may be symbolic here; the real launch checks the rest
    B, H, T, D = q.shape
    return q.new_empty((B, H, T, D)), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("sixn::attention_bwd", mutates_args=())
def attention_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  out: torch.Tensor, lse: torch.Tensor, grad_lse: Optional[torch.Tensor],
                  causal: bool, sm_scale: float,
                  window: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), contiguous, in q's dtype (dk, dv of k's shape)."""
    return _bwd(grad_out, q, k, v, out, lse, grad_lse, causal, sm_scale, window)


@attention_bwd.register_fake
def _attention_bwd_fake(grad_out, q, k, v, out, lse, grad_lse, causal, sm_scale, window=0):
    return q.new_empty(tuple(q.shape)), k.new_empty(tuple(k.shape)), k.new_empty(tuple(k.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, causal, sm_scale, window = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.causal = causal
    ctx.sm_scale = sm_scale
    ctx.window = window
    ctx.set_materialize_grads(False)  # an unused lse gets grad None, not a tensor of zeros


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = torch.ops.sixn.attention_bwd(grad_out, q, k, v, out, lse, grad_lse,
                                              ctx.causal, ctx.sm_scale, ctx.window)
    return dq, dk, dv, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


# FLOP formulas: exactly the block products the kernels run, from model.flops (get_raw=True gives
# the (fake) tensors themselves, whose dtype and device pick the block sizes).
@register_flop_formula(torch.ops.sixn.attention_fwd, get_raw=True)
def _attention_fwd_flop(q, k, v, causal, sm_scale, window=0, *args, out_val=None, **kwargs) -> int:
    B, H, T, D = q.shape
    return attention_exec(T, D, q.dtype, q.device).forward_flops(B, H, T, D, causal, window or None)


@register_flop_formula(torch.ops.sixn.attention_bwd, get_raw=True)
def _attention_bwd_flop(grad_out, q, k, v, out, lse, grad_lse, causal, sm_scale, window=0, *args,
                        out_val=None, **kwargs) -> int:
    B, H, T, D = q.shape
    return attention_exec(T, D, q.dtype, q.device).backward_flops(B, H, T, D, causal, window or None)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
              sm_scale: float | None = None, window: int | None = None) -> torch.Tensor:
    """softmax(sm_scale q k^T + mask) v for q (B, H, T, D) and k, v (B, H_kv, T, D), H_kv dividing H
    (grouped-query attention: query head h uses key/value head h // (H / H_kv)); differentiable.

    sm_scale defaults to 1/sqrt(D). window: each query sees itself and the window - 1 keys before
    it (causal only; None = full causal). Runs the fused Triton kernels through
    sixn::attention_fwd / sixn::attention_bwd (see the module docstring for supported dtypes, head
    dims and limits)."""
    check_inputs(q, k, v, causal, sm_scale)
    w = 0 if window is None else window
    _check_window(w, causal)
    scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    out, _ = torch.ops.sixn.attention_fwd(q, k, v, causal, scale, w)
    return out


# --------------------------------------------------------------------------------------------
# Plain PyTorch reference
# --------------------------------------------------------------------------------------------

def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                        sm_scale: float | None = None, upcast: bool = True,
                        window: int | None = None) -> torch.Tensor:
    """The same function as explicit matmuls over the full T x T square, masked. upcast=True
    computes in fp32 (float64 inputs stay float64) and returns q's dtype; upcast=False computes the
    products in q's dtype with the softmax in fp32, as the model's torch backend and a plain
    low-precision model do.

    k and v may have fewer heads than q (grouped-query attention: query head h reads key/value head
    h // (H / H_kv)): the G query heads of a group are stacked as one (G T, D) batch against their
    (T, D) keys, so K and V are never repeated and the products are the same 2 B H T^2 D FLOPs.
    window: each query sees itself and the window - 1 keys before it (causal only)."""
    dtype = q.dtype
    B, H, T, D = q.shape
    Hk = k.shape[1]
    if H % Hk:
        raise ValueError(f"attention: query heads ({H}) must be a multiple of key/value heads ({Hk})")
    if window is not None and not causal:
        raise ValueError("attention: a sliding window needs causal=True")
    G = H // Hk
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    if upcast:
        work = torch.float64 if dtype == torch.float64 else torch.float32
        q, k, v = q.to(work), k.to(work), v.to(work)
    qg = q.reshape(B, Hk, G * T, D)
    s = torch.matmul(qg, k.transpose(-2, -1)).view(B, Hk, G, T, T) * scale
    if causal:
        i = torch.arange(T, device=q.device)
        rel = i[:, None] - i[None, :]                               # query - key
        keep = rel >= 0 if window is None else (rel >= 0) & (rel < window)
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1).to(q.dtype)
    out = torch.matmul(p.view(B, Hk, G * T, T), v)                 # (B, H_kv, G T, D)
    return out.view(B, H, T, D).to(dtype)
