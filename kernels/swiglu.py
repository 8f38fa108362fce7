"""Fused SwiGLU up-projection: h = silu(x W_g^T + b_g) * (x W_u^T + b_u), forward and backward.

The gated MLP of Llama-style models is W_down h; this kernel computes h, the part with two matrices
sharing the input x, so that x is read once per tile for both products.

Algorithm
- Forward: one tiled GEMM with two fp32 accumulators, G = x W_g^T and U = x W_u^T, over the same
  (rows, cols) tile and the same loads of x. The epilogue adds the biases and stores
  h = silu(G) * U, silu(g) = g sigmoid(g), and the pre-activations G and U (in the input dtype) for
  backward.
- Backward: with s = sigmoid(G), the gradients of the two pre-activations are
      dG = dH * U * s (1 + G (1 - s)),      dU = dH * silu(G)
  computed in the prologue of both gradient GEMMs from tiles of dH, G and U (never stored):
      dX[M, K]   = dG[M, N] @ W_g[N, K] + dU[M, N] @ W_u[N, K]   (tiles rows M, cols K, red N)
      dW_g[N, K] = dG^T X,  dW_u[N, K] = dU^T X                   (tiles rows N, cols K, red M)
  Each kernel's BLOCK_M / BLOCK_N / BLOCK_K are its output rows / output columns / reduction
  (runtime.Tiles), EVEN_K that the reduction needs no mask; M, N, K are always the op's sizes.
      db_g, db_u = column sums of dG, dU                          (programs of the first K tile)
  Each kernel runs two block products per step of its reduction loop.

Executed FLOPs: every tile runs full-size block products (ragged edges masked to zero, not
skipped), so `swiglu_exec` returns a model.flops.GemmExec with matrices=2 and the padded
(rows, cols, reduction) tiles of the three kernels as launched: forward 2 x 2 pad(M) pad(N) pad(K),
backward twice that again. The custom ops "sixn::swiglu_fwd" / "sixn::swiglu_bwd" register those
formulas, so FlopCounterMode counts what the kernels execute.

Dtypes float16, bfloat16 and float32 (fp32 accumulators and epilogue; fp32 products in IEEE
precision when torch.get_float32_matmul_precision() is "highest", TF32 otherwise). x (..., K) with
any strides, weights (N, K), biases (N,) or None (both or neither).

Caution: on CPU the kernels run only in the Triton interpreter, slowly (tests use tiny shapes);
there bf16 block products are computed in fp32 (the interpreter's bf16 tl.dot is wrong in triton
3.9; same block shapes and FLOPs). The CUDA tile table is a first guess for an H100, not tuned or
checked for register spills. Both weight gradients are always computed. No double backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from sixn.model.flops import GemmExec

from .blocks import dot
from .runtime import (Tiles, check_device, check_dtype, check_dtype_supported, check_sizes,
                      check_tensors, dot_policy)


@dataclass(frozen=True)
class SwigluConfig:
    fwd: Tiles      # H[M, N]: block_m rows of M, block_n cols of N, block_k of the reduction K
    dx: Tiles       # dX[M, K]: block_m rows of M, block_n cols of K, block_k of the reduction N
    dw: Tiles       # dW[N, K]: block_m rows of N, block_n cols of K, block_k of the reduction M


def swiglu_config(M: int, N: int, K: int, dtype: torch.dtype, device) -> SwigluConfig:
    """The tiles of the three kernels: a fixed table, never autotuned. Interpreter: 16 x 16 x 16
    (tiny test shapes still span several tiles); CUDA: 64 x 64 x 32 with two accumulators."""
    check_sizes("swiglu", M=M, N=N, K=K)
    check_dtype_supported("swiglu", dtype)
    if torch.device(device).type != "cuda":
        t = Tiles(16, 16, 16)
        return SwigluConfig(t, t, t)
    t = Tiles(64, 64, 32, num_warps=4, num_stages=3)
    # fp32 dW (two accumulators, IEEE products) spills 80-470 B with 4 warps on sm_90 (checked
    # offline, `sixn kernels --aot sm_90`); 8 warps hold it. Warps leave the tiles, and so the
    # executed FLOPs (swiglu_exec), unchanged.
    dw = Tiles(64, 64, 32, num_warps=8, num_stages=3) if dtype == torch.float32 else t
    return SwigluConfig(t, t, dw)


def swiglu_exec(M: int, N: int, K: int, dtype: torch.dtype, device) -> GemmExec:
    """What `swiglu` executes for x (M, K) and weights (N, K): two matrices, the padded tiles."""
    c = swiglu_config(M, N, K, dtype, device)
    return GemmExec(fwd_tiles=c.fwd.mnk, dx_tiles=c.dx.mnk, dw_tiles=c.dw.mnk, matrices=2)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _gate_grads(dh, g, u):
    """(dG, dU) in fp32 from tiles of dH, G, U."""
    dh = dh.to(tl.float32)
    g = g.to(tl.float32)
    u = u.to(tl.float32)
    s = tl.sigmoid(g)
    return dh * u * s * (1.0 + g * (1.0 - s)), dh * g * s


@triton.jit
def _swiglu_fwd(x_ptr, wg_ptr, wu_ptr, bg_ptr, bu_ptr, h_ptr, g_ptr, u_ptr,
                M, N, K,
                stride_xm, stride_xk, stride_wn, stride_wk,
                HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
                UPCAST: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One (rows of M, cols of N) tile of H, G and U (all contiguous (M, N))."""
    pid = tl.program_id(0)
    n_cols = tl.cdiv(N, BLOCK_N)
    rows = (pid // n_cols) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % n_cols) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (rows % M).to(tl.int64)         # ragged edges: wrap the loads, mask the stores
    rn = (cols % N).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk
    w_off = rk[:, None] * stride_wk + rn[None, :] * stride_wn              # (red, cols) of W^T
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if not EVEN_K:
            k_ok = rk < K - k0
            x = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)
            wg = tl.load(wg_ptr + w_off, mask=k_ok[:, None], other=0.0)
            wu = tl.load(wu_ptr + w_off, mask=k_ok[:, None], other=0.0)
        else:
            x = tl.load(x_ptrs)
            wg = tl.load(wg_ptr + w_off)
            wu = tl.load(wu_ptr + w_off)
        acc_g = dot(x, wg, acc_g, PRECISION, UPCAST)
        acc_u = dot(x, wu, acc_u, PRECISION, UPCAST)
        x_ptrs += BLOCK_K * stride_xk
        w_off += BLOCK_K * stride_wk
    if HAS_BIAS:
        acc_g += tl.load(bg_ptr + rn).to(tl.float32)[None, :]
        acc_u += tl.load(bu_ptr + rn).to(tl.float32)[None, :]
    out = rows.to(tl.int64)[:, None] * N + cols.to(tl.int64)[None, :]
    ok = (rows[:, None] < M) & (cols[None, :] < N)
    h = acc_g * tl.sigmoid(acc_g) * acc_u
    tl.store(h_ptr + out, h.to(h_ptr.dtype.element_ty), mask=ok)
    tl.store(g_ptr + out, acc_g.to(g_ptr.dtype.element_ty), mask=ok)
    tl.store(u_ptr + out, acc_u.to(u_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _swiglu_bwd_dx(dh_ptr, g_ptr, u_ptr, wg_ptr, wu_ptr, dx_ptr,
                   M, N, K,
                   stride_wn, stride_wk,
                   EVEN_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One (rows of M, cols of K) tile of dX = dG W_g + dU W_u; dH, G, U contiguous (M, N)."""
    pid = tl.program_id(0)
    n_cols = tl.cdiv(K, BLOCK_N)
    rows = (pid // n_cols) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = (pid % n_cols) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (rows % M).to(tl.int64)
    rk = (cols % K).to(tl.int64)
    rn = tl.arange(0, BLOCK_K)
    a_off = rm[:, None] * N + rn[None, :]                                   # (rows, red) of dH, G, U
    w_off = rn[:, None] * stride_wn + rk[None, :] * stride_wk               # (red, cols) of W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_K):
        if not EVEN_K:  # past N: dH = 0, so dG = dU = 0
            n_ok = rn < N - n0
            dh = tl.load(dh_ptr + a_off, mask=n_ok[None, :], other=0.0)
            g = tl.load(g_ptr + a_off, mask=n_ok[None, :], other=0.0)
            u = tl.load(u_ptr + a_off, mask=n_ok[None, :], other=0.0)
            wg = tl.load(wg_ptr + w_off, mask=n_ok[:, None], other=0.0)
            wu = tl.load(wu_ptr + w_off, mask=n_ok[:, None], other=0.0)
        else:
            dh = tl.load(dh_ptr + a_off)
            g = tl.load(g_ptr + a_off)
            u = tl.load(u_ptr + a_off)
            wg = tl.load(wg_ptr + w_off)
            wu = tl.load(wu_ptr + w_off)
        dg, du = _gate_grads(dh, g, u)
        acc = dot(dg.to(wg.dtype), wg, acc, PRECISION, UPCAST)
        acc = dot(du.to(wu.dtype), wu, acc, PRECISION, UPCAST)
        a_off += BLOCK_K
        w_off += BLOCK_K * stride_wn
    ok = (rows[:, None] < M) & (cols[None, :] < K)
    tl.store(dx_ptr + rows.to(tl.int64)[:, None] * K + cols.to(tl.int64)[None, :],
             acc.to(dx_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _swiglu_bwd_dw(dh_ptr, g_ptr, u_ptr, x_ptr, dwg_ptr, dwu_ptr, dbg_ptr, dbu_ptr,
                   M, N, K,
                   stride_xm, stride_xk,
                   HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
                   UPCAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One (rows of N, cols of K) tile of dW_g = dG^T X and dW_u = dU^T X (+ the bias sums)."""
    pid = tl.program_id(0)
    n_cols = tl.cdiv(K, BLOCK_N)
    pid_c = pid % n_cols
    rows = (pid // n_cols) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = (rows % N).to(tl.int64)
    rk = (cols % K).to(tl.int64)
    rm = tl.arange(0, BLOCK_K)
    t_off = rm[None, :].to(tl.int64) * N + rn[:, None]                      # (rows, red) of dH^T ...
    x_ptrs = x_ptr + rm[:, None].to(tl.int64) * stride_xm + rk[None, :] * stride_xk
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    sum_g = tl.zeros((BLOCK_M,), dtype=tl.float32)
    sum_u = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_K):
        if not EVEN_K:  # past M: dH = 0 and X = 0
            m_ok = rm < M - m0
            dh = tl.load(dh_ptr + t_off, mask=m_ok[None, :], other=0.0)
            g = tl.load(g_ptr + t_off, mask=m_ok[None, :], other=0.0)
            u = tl.load(u_ptr + t_off, mask=m_ok[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        else:
            dh = tl.load(dh_ptr + t_off)
            g = tl.load(g_ptr + t_off)
            u = tl.load(u_ptr + t_off)
            x = tl.load(x_ptrs)
        dg, du = _gate_grads(dh, g, u)
        dg = dg.to(x.dtype)
        du = du.to(x.dtype)
        acc_g = dot(dg, x, acc_g, PRECISION, UPCAST)
        acc_u = dot(du, x, acc_u, PRECISION, UPCAST)
        if HAS_BIAS:
            sum_g += tl.sum(dg.to(tl.float32), axis=1)
            sum_u += tl.sum(du.to(tl.float32), axis=1)
        t_off += BLOCK_K * N
        x_ptrs += BLOCK_K * stride_xm
    ok = (rows[:, None] < N) & (cols[None, :] < K)
    out = rows.to(tl.int64)[:, None] * K + cols.to(tl.int64)[None, :]
    tl.store(dwg_ptr + out, acc_g.to(dwg_ptr.dtype.element_ty), mask=ok)
    tl.store(dwu_ptr + out, acc_u.to(dwu_ptr.dtype.element_ty), mask=ok)
    if HAS_BIAS:
        if pid_c == 0:
            tl.store(dbg_ptr + rows, sum_g.to(dbg_ptr.dtype.element_ty), mask=rows < N)
            tl.store(dbu_ptr + rows, sum_u.to(dbu_ptr.dtype.element_ty), mask=rows < N)


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

def _validate(x, w_gate, w_up, b_gate, b_up) -> None:
    check_tensors("swiglu", optional=("b_gate", "b_up"), x=x, w_gate=w_gate, w_up=w_up,
                  b_gate=b_gate, b_up=b_up)
    if w_gate.dim() != 2 or w_gate.shape != w_up.shape:
        raise ValueError(f"swiglu: w_gate and w_up must be 2-D (N, K) of one shape, got "
                         f"{tuple(w_gate.shape)} and {tuple(w_up.shape)}")
    N, K = w_gate.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"swiglu: x must have shape (..., K) with K = {K}, got {tuple(x.shape)}")
    if (b_gate is None) != (b_up is None):
        raise ValueError("swiglu: give both biases or neither")
    for name, b in (("b_gate", b_gate), ("b_up", b_up)):
        if b is not None and tuple(b.shape) != (N,):
            raise ValueError(f"swiglu: {name} must have shape ({N},), got {tuple(b.shape)}")
    check_dtype("swiglu", x, w_gate, w_up, b_gate, b_up)
    check_device("swiglu", x, w_gate, w_up, b_gate, b_up)


def _fwd(x2, wg, wu, bg, bu):
    M, K = x2.shape
    N = wg.shape[0]
    t = swiglu_config(M, N, K, x2.dtype, x2.device).fwd
    wg, wu = wg.contiguous(), wu.contiguous()  # one stride pair serves both weights
    h, g, u = (torch.empty((M, N), device=x2.device, dtype=x2.dtype) for _ in range(3))
    if M:
        _swiglu_fwd[(triton.cdiv(M, t.block_m) * triton.cdiv(N, t.block_n),)](
            x2, wg, wu, bg if bg is not None else h, bu if bu is not None else h, h, g, u,
            M, N, K, x2.stride(0), x2.stride(1), wg.stride(0), wg.stride(1),
            HAS_BIAS=bg is not None, EVEN_K=K % t.block_k == 0,
            **dot_policy(x2.dtype, x2.device).constexprs(),
            BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
            num_warps=t.num_warps, num_stages=t.num_stages)
    return h, g, u


def _bwd(dh2, g, u, x2, wg, wu, has_bias):
    M, K = x2.shape
    N = wg.shape[0]
    c = swiglu_config(M, N, K, x2.dtype, x2.device)
    dx = torch.empty((M, K), device=x2.device, dtype=x2.dtype)
    dwg, dwu = torch.zeros_like(wg), torch.zeros_like(wu)
    nb = N if has_bias else 0
    dbg, dbu = (torch.zeros((nb,), device=x2.device, dtype=wg.dtype) for _ in range(2))
    if M == 0:
        return dx, dwg, dwu, dbg, dbu
    wg, wu = wg.contiguous(), wu.contiguous()
    common = dot_policy(x2.dtype, x2.device).constexprs()
    t = c.dx
    _swiglu_bwd_dx[(triton.cdiv(M, t.block_m) * triton.cdiv(K, t.block_n),)](
        dh2, g, u, wg, wu, dx, M, N, K, wg.stride(0), wg.stride(1),
        EVEN_K=N % t.block_k == 0, BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
        num_warps=t.num_warps, num_stages=t.num_stages, **common)
    t = c.dw
    _swiglu_bwd_dw[(triton.cdiv(N, t.block_m) * triton.cdiv(K, t.block_n),)](
        dh2, g, u, x2, dwg, dwu, dbg if has_bias else dwg, dbu if has_bias else dwu,
        M, N, K, x2.stride(0), x2.stride(1),
        HAS_BIAS=has_bias, EVEN_K=M % t.block_k == 0, BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        BLOCK_K=t.block_k, num_warps=t.num_warps, num_stages=t.num_stages, **common)
    return dx, dwg, dwu, dbg, dbu


# --------------------------------------------------------------------------------------------
# Custom ops, autograd and FLOP formulas
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("sixn::swiglu_fwd", mutates_args=(),
                         schema="(Tensor x, Tensor w_gate, Tensor w_up, Tensor? b_gate, Tensor? b_up)"
                                " -> (Tensor, Tensor, Tensor)")
def _swiglu_fwd_op(x, w_gate, w_up, b_gate, b_up):
    """(h, g, u), each (..., N): h = silu(g) * u and the two pre-activations."""
    _validate(x, w_gate, w_up, b_gate, b_up)
    N, K = w_gate.shape
    h, g, u = _fwd(x.reshape(-1, K), w_gate, w_up, b_gate, b_up)
    shape = (*x.shape[:-1], N)
    return h.view(shape), g.view(shape), u.view(shape)


@_swiglu_fwd_op.register_fake
def _(x, w_gate, w_up, b_gate, b_up):
    shape = (*x.shape[:-1], w_gate.shape[0])
    return x.new_empty(shape), x.new_empty(shape), x.new_empty(shape)


@torch.library.custom_op("sixn::swiglu_bwd", mutates_args=(),
                         schema="(Tensor dh, Tensor g, Tensor u, Tensor x, Tensor w_gate, Tensor w_up,"
                                " bool has_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
def _swiglu_bwd_op(dh, g, u, x, w_gate, w_up, has_bias):
    """(dx, dW_g, dW_u, db_g, db_u); the bias gradients are empty without biases."""
    N, K = w_gate.shape
    dx, dwg, dwu, dbg, dbu = _bwd(dh.reshape(-1, N).contiguous(), g.reshape(-1, N), u.reshape(-1, N),
                                  x.reshape(-1, K), w_gate, w_up, has_bias)
    return dx.view(x.shape), dwg, dwu, dbg, dbu


@_swiglu_bwd_op.register_fake
def _(dh, g, u, x, w_gate, w_up, has_bias):
    nb = w_gate.shape[0] if has_bias else 0
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(w_gate),
            torch.empty_like(w_up), w_gate.new_empty((nb,)), w_gate.new_empty((nb,)))


def _setup_context(ctx, inputs, output):
    x, w_gate, w_up, b_gate, b_up = inputs
    _, g, u = output
    ctx.mark_non_differentiable(g, u)
    ctx.has_bias = b_gate is not None
    ctx.save_for_backward(x, w_gate, w_up, g, u)


def _backward(ctx, dh, _dg, _du):
    x, w_gate, w_up, g, u = ctx.saved_tensors
    dx, dwg, dwu, dbg, dbu = torch.ops.sixn.swiglu_bwd(dh, g, u, x, w_gate, w_up, ctx.has_bias)
    if not ctx.has_bias:
        dbg = dbu = None
    return dx, dwg, dwu, dbg, dbu


_swiglu_fwd_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.sixn.swiglu_fwd, get_raw=True)
def _swiglu_fwd_flops(x, w_gate, w_up, b_gate, b_up, *args, out_val=None, **kwargs) -> int:
    N, K = w_gate.shape
    M = x.numel() // K
    return swiglu_exec(M, N, K, x.dtype, x.device).forward_flops(M, N, K)


@register_flop_formula(torch.ops.sixn.swiglu_bwd, get_raw=True)
def _swiglu_bwd_flops(dh, g, u, x, w_gate, w_up, has_bias, *args, out_val=None, **kwargs) -> int:
    N, K = w_gate.shape
    M = x.numel() // K
    return swiglu_exec(M, N, K, x.dtype, x.device).backward_flops(M, N, K)


# --------------------------------------------------------------------------------------------
# Public function and the plain PyTorch reference
# --------------------------------------------------------------------------------------------

def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
           b_gate: Optional[torch.Tensor] = None, b_up: Optional[torch.Tensor] = None) -> torch.Tensor:
    """silu(x w_gate^T + b_gate) * (x w_up^T + b_up) with both GEMMs in one fused kernel,
    differentiable. x (..., K), weights (N, K), biases (N,) or None -> (..., N) in x's dtype.
    Under torch.autocast the inputs are cast to the autocast dtype first, as F.linear's are."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, w_gate, w_up = x.to(dt), w_gate.to(dt), w_up.to(dt)
        b_gate = None if b_gate is None else b_gate.to(dt)
        b_up = None if b_up is None else b_up.to(dt)
    _validate(x, w_gate, w_up, b_gate, b_up)
    return torch.ops.sixn.swiglu_fwd(x, w_gate, w_up, b_gate, b_up)[0]


def gated_reference(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                    b_gate: Optional[torch.Tensor] = None, b_up: Optional[torch.Tensor] = None,
                    act: str = "silu", upcast: bool = False) -> torch.Tensor:
    """act(x w_gate^T + b_gate) * (x w_up^T + b_up) in plain PyTorch, act "silu" (SwiGLU) or "gelu"
    (GeGLU, tanh form). upcast=True computes in float64 and returns x's dtype."""
    dt = x.dtype
    if upcast:
        x, w_gate, w_up = x.double(), w_gate.double(), w_up.double()
        b_gate = None if b_gate is None else b_gate.double()
        b_up = None if b_up is None else b_up.double()
    g = F.linear(x, w_gate, b_gate)
    a = F.silu(g) if act == "silu" else F.gelu(g, approximate="tanh")
    return (a * F.linear(x, w_up, b_up)).to(dt)


__all__ = ["swiglu", "swiglu_exec", "swiglu_config", "gated_reference", "SwigluConfig"]
