"""Fused linear + GELU: y = gelu(x @ W^T + b), forward and backward, as Triton GEMMs.

Algorithm
- Forward: one tiled GEMM (Triton matmul tutorial 03: grouped-M tile order for L2 reuse, fp32
  accumulator). The epilogue adds the bias to the fp32 accumulator, applies the tanh-form GELU
      gelu(z) = 0.5 z (1 + tanh(u)),  u = sqrt(2/pi) (z + 0.044715 z^3)
  (what torch.nn.functional.gelu(approximate="tanh") computes) and stores y; it also stores the
  pre-activation z (in the input dtype) when backward is to use a saved z.
- Backward: the GELU derivative is fused into the prologue of both gradient GEMMs. Each tile of
  dY and Z is loaded, multiplied as dZ = dY * gelu'(Z) in fp32, rounded to the input dtype (as
  PyTorch's own gelu_backward output is) and fed straight to tl.dot, so dZ never goes to memory:
      dX[M, K] = dZ[M, N] @ W[N, K]          (tiles rows M, cols K, reduction N)
      dW[N, K] = dZ^T[N, M] @ X[M, K]        (tiles rows N, cols K, reduction M)
      db[N]    = sum_m dZ[m, :]              (in the dW kernel, by the programs of the first K tile)
  The price of the fusion is that gelu'(Z) is evaluated cdiv(K, block) times per element in each
  kernel (element-wise work on the CUDA cores, no extra matmul).

Save or recompute the pre-activation (the `recompute` argument)
- save (default, recompute=False): the forward stores Z (M x N in the input dtype) for backward.
  The torch backend keeps the same tensor (F.gelu saves its input), so saving costs no memory over
  the reference, and backward runs no extra GEMM.
- recompute=True: the forward stores only y; backward re-runs the forward GEMM (same kernel, same tiles,
  bit-identical Z) into a scratch buffer before the two gradient GEMMs. This frees M x N activations
  per layer for one extra GEMM: +2MNK, a third more backward work for this product. The flag is part
  of the executed-FLOP spec (model.flops.GemmExec.recompute) returned by `linear_gelu_exec`.

Tiles are picked by a fixed table from (M, N, K, dtype, device), never autotuned, so the executed
work is known exactly: every tile runs full-size block products (ragged edges are masked to zero,
not skipped), and `linear_gelu_exec` returns the (rows, cols, reduction) tiles of the three products
as launched. Every kernel names its blocks by their role in its own product (runtime.Tiles):
BLOCK_M output rows, BLOCK_N output columns, BLOCK_K the reduction, and EVEN_K says the reduction
needs no mask; the sizes M, N, K are always those of the op (x (M, K), weight (N, K)), so the dX
kernel tiles (M, K) by (BLOCK_M, BLOCK_N) and reduces over N by BLOCK_K. The custom ops
"sixn::linear_gelu_fwd" / "sixn::linear_gelu_bwd" carry FLOP formulas from that spec, so
torch.utils.flop_counter.FlopCounterMode counts what the kernels execute.

Dtypes: float16, bfloat16 (fp32 accumulation; tensor cores on CUDA) and float32 (fp32 products with
IEEE precision when torch.get_float32_matmul_precision() is "highest", TF32 otherwise, like torch).
Shapes: x (..., K) with any strides, weight (N, K) with any strides, bias (N,) or None.

Caution:
- Both gradients are always computed (the FLOP spec counts both), even when x or the weight does
  not need a gradient.
- No double backward.
- On CPU the kernels run only in the Triton interpreter (TRITON_INTERPRET=1): exact but slow, for
  tests on small shapes. Two interpreter bugs for bfloat16 in triton 3.9 are worked around there
  only (runtime.dot_policy's UPCAST): its bf16 tl.dot returns garbage (the blocks are upcast to fp32
  first: same block shapes and FLOP count) and its fp32 -> bf16 cast truncates (values are rounded
  to nearest-even by hand first, as a GPU's cast does).
"""

from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.utils.flop_counter import register_flop_formula

from sixn.model.flops import GemmExec

from .blocks import dot
from .runtime import (Tiles, check_device, check_dtype, check_dtype_supported, check_sizes,
                      check_tensors, dot_policy)


# --------------------------------------------------------------------------------------------
# Tile table (deterministic: the executed-FLOP spec depends on it)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearGeluConfig:
    fwd: Tiles         # y[M, N]  = x[M, K] @ W^T        block_m of M, block_n of N, block_k of K
    dx: Tiles          # dX[M, K] = dZ[M, N] @ W[N, K]   block_m of M, block_n of K, block_k of N
    dw: Tiles          # dW[N, K] = dZ^T[N, M] @ X[M, K] block_m of N, block_n of K, block_k of M
    group_m: int = 8   # row tiles per group in the grouped (L2-friendly) launch order


def linear_gelu_config(M: int, N: int, K: int, dtype: torch.dtype,
                       device: "str | torch.device") -> LinearGeluConfig:
    """The tiles the kernels are launched with for this problem (a fixed table, no autotuning).

    Interpreter (CPU): 32 x 32 x 32 everywhere, small enough for quick tests.
    CUDA (chosen for H100 / H200, not autotuned): 128 x 128 output tiles, 8 warps, 3 pipeline
    stages; when M <= 64, where a 128-row tile would be mostly padding, 64-row tiles with 4 warps
    (fp32: 8, and 2 stages for dX) and 128 x 64 dW tiles with 2 stages (its loop over M runs at
    most twice). Reduction block 64 for 16-bit inputs, 32 for fp32 (whose tiles take twice the
    shared memory) and for a ragged reduction (K for the forward, N for dX, M for dW not a
    multiple of 64): there the masked loads of a 64-deep block spill registers on sm_90 (up to
    1.3 KB per thread with triton 3.6's ptxas). Every configuration is checked offline with
    `sixn kernels --aot sm_90`. The tiles, padding included, are the executed-FLOP spec
    (linear_gelu_exec), so the count stays exact."""
    check_sizes("linear_gelu", M=M, N=N, K=K)
    check_dtype_supported("linear_gelu", dtype)
    dev = torch.device(device)
    if dev.type != "cuda":
        t = Tiles(32, 32, 32, num_warps=4, num_stages=1)
        return LinearGeluConfig(fwd=t, dx=t, dw=t)

    def red(length: int) -> int:  # the reduction block for a reduction of this length
        return 32 if dtype == torch.float32 or length % 64 else 64

    small = M <= 64
    fp32 = dtype == torch.float32
    bm = 64 if small else 128
    warps = 4 if small and not fp32 else 8  # fp32 64-row dX spills with 4 warps
    return LinearGeluConfig(
        fwd=Tiles(bm, 128, red(K), num_warps=warps, num_stages=3),
        dx=Tiles(bm, 128, red(N), num_warps=warps, num_stages=2 if small and fp32 else 3),
        # M <= 64: dW's loop over M runs once or twice, so 2 stages; 64 columns keep it well
        # below the register limit (128 x 128 sat at 255 registers and spilled when ragged)
        dw=Tiles(128, 64 if small else 128, red(M), num_warps=8, num_stages=2 if small else 3),
    )


def linear_gelu_exec(M: int, N: int, K: int, dtype: torch.dtype, device: "str | torch.device",
                     recompute: bool = False) -> GemmExec:
    """How `linear_gelu` executes an (M, N, K) problem: the (rows, cols, reduction) tiles of the
    forward, dX and dW products exactly as launched, and whether backward recomputes the forward
    product (recompute, as passed to `linear_gelu`)."""
    cfg = linear_gelu_config(M, N, K, dtype, device)
    return GemmExec(fwd_tiles=cfg.fwd.mnk, dx_tiles=cfg.dx.mnk, dw_tiles=cfg.dw.mnk,
                    recompute=bool(recompute))


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _grouped_tile(pid, R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, GROUP: tl.constexpr):
    """Program id -> (row tile, column tile), GROUP row tiles at a time, so that consecutive programs
    share the same few row and column panels in L2 (Triton matmul tutorial)."""
    n_r = tl.cdiv(R, BLOCK_R)
    n_c = tl.cdiv(C, BLOCK_C)
    per_group = GROUP * n_c
    first_r = (pid // per_group) * GROUP
    group_size = tl.minimum(n_r - first_r, GROUP)
    pid_r = first_r + (pid % per_group) % group_size
    pid_c = (pid % per_group) // group_size
    return pid_r, pid_c


@triton.jit
def _rne(x, UPCAST: tl.constexpr):
    """fp32 x, rounded to the nearest bfloat16 (ties to even) under UPCAST (bf16 in the interpreter):
    the interpreter's fp32 -> bf16 cast truncates, a GPU's rounds to nearest; after this its cast is
    exact."""
    if UPCAST:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    return x


@triton.jit
def _tanh(u):
    # tanh(|u|) = (1 - e) / (1 + e) with e = exp(-2 |u|) in (0, 1]: never overflows
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(u >= 0, t, -t)


@triton.jit
def _gelu(z):
    u = 0.7978845608028654 * (z + 0.044715 * z * z * z)  # sqrt(2/pi) (z + c z^3)
    return 0.5 * z * (1.0 + _tanh(u))


# gelu(z) = 0.5 z (1 + tanh(u)),  u = sqrt(2/pi) (z + c z^3),  c = 0.044715
# gelu'(z) = 0.5 (1 + tanh(u)) + 0.5 z (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 c z^2)
@triton.jit
def _gelu_grad(z):
    u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
    t = _tanh(u)
    du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * z * z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du


@triton.jit
def _linear_gelu_fwd(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr, z_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_xk, stride_wn, stride_wk, stride_b, stride_ym, stride_yn, stride_zm, stride_zn,
    # meta-parameters
    HAS_BIAS: tl.constexpr, STORE_Y: tl.constexpr, STORE_Z: tl.constexpr, EVEN_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One (BLOCK_M, BLOCK_N) tile of z = x @ W^T + b; stores gelu(z) and/or z."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # ragged M / N: wrap to valid rows and columns for the loads, mask the stores
    rm = (rows % M).to(tl.int64)
    rn = (cols % N).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk      # (BM, BK)
    w_ptrs = w_ptr + rk[:, None] * stride_wk + rn[None, :] * stride_wn      # (BK, BN) of W^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
        else:  # ragged K: zeros past the end add nothing
            k_ok = rk < K - k0
            a = tl.load(x_ptrs, mask=k_ok[None, :], other=0.0)
            b = tl.load(w_ptrs, mask=k_ok[:, None], other=0.0)
        acc = dot(a, b, acc, PRECISION, UPCAST)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    # epilogue on the fp32 accumulator
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn * stride_b).to(tl.float32)[None, :]
    out_mask = (rows[:, None] < M) & (cols[None, :] < N)
    om = rows.to(tl.int64)[:, None]
    on = cols.to(tl.int64)[None, :]
    if STORE_Z:
        zc = _rne(acc, UPCAST).to(z_ptr.dtype.element_ty)
        tl.store(z_ptr + om * stride_zm + on * stride_zn, zc, mask=out_mask)
    if STORE_Y:
        y = _rne(_gelu(acc), UPCAST)
        tl.store(y_ptr + om * stride_ym + on * stride_yn, y.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _linear_gelu_bwd_dx(
    # pointers
    dy_ptr, z_ptr, w_ptr, dx_ptr,
    # sizes
    M, N, K,
    # strides
    stride_dym, stride_dyn, stride_zm, stride_zn, stride_wn, stride_wk, stride_dxm, stride_dxk,
    # meta-parameters
    EVEN_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One (BLOCK_M rows of M, BLOCK_N cols of K) tile of dX = (dY * gelu'(Z)) @ W, reducing over
    N in steps of BLOCK_K; gelu' applied in the prologue."""
    pid_m, pid_k = _grouped_tile(tl.program_id(0), M, K, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = (rows % M).to(tl.int64)
    rk = (cols % K).to(tl.int64)
    rn = tl.arange(0, BLOCK_K)
    dy_ptrs = dy_ptr + rm[:, None] * stride_dym + rn[None, :] * stride_dyn  # (BM, BK)
    z_ptrs = z_ptr + rm[:, None] * stride_zm + rn[None, :] * stride_zn      # (BM, BK)
    w_ptrs = w_ptr + rn[:, None] * stride_wn + rk[None, :] * stride_wk      # (BK, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_K):
        if EVEN_K:
            dy = tl.load(dy_ptrs)
            z = tl.load(z_ptrs)
            w = tl.load(w_ptrs)
        else:  # ragged N: dY = 0 past the end, so dZ = 0 there
            n_ok = rn < N - n0
            dy = tl.load(dy_ptrs, mask=n_ok[None, :], other=0.0)
            z = tl.load(z_ptrs, mask=n_ok[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=n_ok[:, None], other=0.0)
        dz = dy.to(tl.float32) * _gelu_grad(z.to(tl.float32))
        acc = dot(_rne(dz, UPCAST).to(w.dtype), w, acc, PRECISION, UPCAST)
        dy_ptrs += BLOCK_K * stride_dyn
        z_ptrs += BLOCK_K * stride_zn
        w_ptrs += BLOCK_K * stride_wn
    out_mask = (rows[:, None] < M) & (cols[None, :] < K)
    dx_ptrs = dx_ptr + rows.to(tl.int64)[:, None] * stride_dxm + cols.to(tl.int64)[None, :] * stride_dxk
    tl.store(dx_ptrs, _rne(acc, UPCAST).to(dx_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _linear_gelu_bwd_dw(
    # pointers
    dy_ptr, z_ptr, x_ptr, dw_ptr, db_ptr,
    # sizes
    M, N, K,
    # strides
    stride_dym, stride_dyn, stride_zm, stride_zn, stride_xm, stride_xk, stride_dwn, stride_dwk,
    # meta-parameters
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """One (BLOCK_M rows of N, BLOCK_N cols of K) tile of dW = (dY * gelu'(Z))^T @ X, reducing over
    M in steps of BLOCK_K; the programs of the first K tile
    also write db = column sums of dZ (the same rounded dZ the GEMM uses)."""
    pid_n, pid_k = _grouped_tile(tl.program_id(0), N, K, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_k * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = (rows % N).to(tl.int64)
    rk = (cols % K).to(tl.int64)
    rm = tl.arange(0, BLOCK_K)
    dyt_ptrs = dy_ptr + rn[:, None] * stride_dyn + rm[None, :] * stride_dym  # (BM, BK) of dY^T
    zt_ptrs = z_ptr + rn[:, None] * stride_zn + rm[None, :] * stride_zm      # (BM, BK) of Z^T
    x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk       # (BK, BN)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_K):
        if EVEN_K:
            dyt = tl.load(dyt_ptrs)
            zt = tl.load(zt_ptrs)
            x = tl.load(x_ptrs)
        else:  # ragged M: dY = 0 and X = 0 past the end
            m_ok = rm < M - m0
            dyt = tl.load(dyt_ptrs, mask=m_ok[None, :], other=0.0)
            zt = tl.load(zt_ptrs, mask=m_ok[None, :], other=0.0)
            x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        dzt = _rne(dyt.to(tl.float32) * _gelu_grad(zt.to(tl.float32)), UPCAST).to(x.dtype)
        acc = dot(dzt, x, acc, PRECISION, UPCAST)
        if HAS_BIAS:
            db += tl.sum(dzt.to(tl.float32), axis=1)
        dyt_ptrs += BLOCK_K * stride_dym
        zt_ptrs += BLOCK_K * stride_zm
        x_ptrs += BLOCK_K * stride_xm
    out_mask = (rows[:, None] < N) & (cols[None, :] < K)
    dw_ptrs = dw_ptr + rows.to(tl.int64)[:, None] * stride_dwn + cols.to(tl.int64)[None, :] * stride_dwk
    tl.store(dw_ptrs, _rne(acc, UPCAST).to(dw_ptr.dtype.element_ty), mask=out_mask)
    if HAS_BIAS:
        if pid_k == 0:
            tl.store(db_ptr + rows, _rne(db, UPCAST).to(db_ptr.dtype.element_ty), mask=rows < N)


# --------------------------------------------------------------------------------------------
# Launchers: validate, allocate, build the grid, launch
# --------------------------------------------------------------------------------------------

def _validate(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    name = "linear_gelu"
    check_tensors(name, optional=("bias",), x=x, weight=weight, bias=bias)
    if weight.dim() != 2:
        raise ValueError(f"{name}: weight must be 2-D (N, K) = (out_features, in_features), "
                         f"got shape {tuple(weight.shape)}")
    N, K = weight.shape
    if x.dim() < 1 or x.shape[-1] != K:
        raise ValueError(f"{name}: x must have shape (..., K) with K = weight.shape[1] = {K}, "
                         f"got shape {tuple(x.shape)}")
    if N == 0 or K == 0:
        raise ValueError(f"{name}: weight must be non-empty, got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (N,):
        raise ValueError(f"{name}: bias must have shape (N,) = ({N},) to match weight, "
                         f"got {tuple(bias.shape)}")
    check_dtype(name, x, weight, bias)
    check_device(name, x, weight, bias)


def _launch_fwd(x2: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                store_y: bool, store_z: bool):
    """x2 (M, K) -> (y or None, z or None), both (M, N) in x2's dtype."""
    M, K = x2.shape
    N = weight.shape[0]
    c = linear_gelu_config(M, N, K, x2.dtype, x2.device)
    t = c.fwd
    y = torch.empty((M, N), device=x2.device, dtype=x2.dtype) if store_y else None
    z = torch.empty((M, N), device=x2.device, dtype=x2.dtype) if store_z else None
    if M == 0:
        return y, z
    some = y if y is not None else z  # placeholder for the pointer a constexpr flag disables
    grid = (triton.cdiv(M, t.block_m) * triton.cdiv(N, t.block_n),)
    _linear_gelu_fwd[grid](
        x2, weight, bias if bias is not None else some, some if y is None else y,
        some if z is None else z,
        M, N, K,
        x2.stride(0), x2.stride(1), weight.stride(0), weight.stride(1),
        bias.stride(0) if bias is not None else 0,
        N, 1, N, 1,  # y and z are fresh contiguous (M, N)
        HAS_BIAS=bias is not None, STORE_Y=store_y, STORE_Z=store_z, EVEN_K=K % t.block_k == 0,
        **dot_policy(x2.dtype, x2.device).constexprs(),
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, GROUP_M=c.group_m,
        num_warps=t.num_warps, num_stages=t.num_stages,
    )
    return y, z


def _launch_bwd(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, z2: torch.Tensor,
                has_bias: bool):
    """dy2, z2 (M, N), x2 (M, K) -> dx (M, K), dw (N, K), db (N,) or an empty tensor."""
    M, K = x2.shape
    N = weight.shape[0]
    c = linear_gelu_config(M, N, K, x2.dtype, x2.device)
    dx = torch.empty((M, K), device=x2.device, dtype=x2.dtype)
    dw = torch.empty((N, K), device=x2.device, dtype=weight.dtype)
    db = torch.empty((N if has_bias else 0,), device=x2.device, dtype=weight.dtype)
    if M == 0:
        dw.zero_()
        db.zero_()
        return dx, dw, db
    dot_args = dot_policy(x2.dtype, x2.device).constexprs()
    t = c.dx
    grid = (triton.cdiv(M, t.block_m) * triton.cdiv(K, t.block_n),)
    _linear_gelu_bwd_dx[grid](
        dy2, z2, weight, dx,
        M, N, K,
        dy2.stride(0), dy2.stride(1), z2.stride(0), z2.stride(1), weight.stride(0), weight.stride(1),
        dx.stride(0), dx.stride(1),
        EVEN_K=N % t.block_k == 0, **dot_args,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, GROUP_M=c.group_m,
        num_warps=t.num_warps, num_stages=t.num_stages,
    )
    t = c.dw
    grid = (triton.cdiv(N, t.block_m) * triton.cdiv(K, t.block_n),)
    _linear_gelu_bwd_dw[grid](
        dy2, z2, x2, dw, db if has_bias else dw,
        M, N, K,
        dy2.stride(0), dy2.stride(1), z2.stride(0), z2.stride(1), x2.stride(0), x2.stride(1),
        dw.stride(0), dw.stride(1),
        HAS_BIAS=has_bias, EVEN_K=M % t.block_k == 0, **dot_args,
        BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k, GROUP_M=c.group_m,
        num_warps=t.num_warps, num_stages=t.num_stages,
    )
    return dx, dw, db


# --------------------------------------------------------------------------------------------
# Custom ops ("sixn" namespace), autograd and FLOP formulas
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("sixn::linear_gelu_fwd", mutates_args=(),
                         schema="(Tensor x, Tensor weight, Tensor? bias, bool recompute) -> (Tensor, Tensor)")
def _linear_gelu_fwd_op(x, weight, bias, recompute):
    """(y, z): y = gelu(x @ W^T + b) of shape (..., N); z the pre-activation, or an empty tensor
    when backward is to recompute it."""
    _validate(x, weight, bias)
    N, K = weight.shape
    x2 = x.reshape(-1, K)
    y, z = _launch_fwd(x2, weight, bias, store_y=True, store_z=not recompute)
    y = y.view(*x.shape[:-1], N)
    z = x.new_empty((0,)) if z is None else z.view(*x.shape[:-1], N)
    return y, z


@_linear_gelu_fwd_op.register_fake
def _(x, weight, bias, recompute):
    _validate(x, weight, bias)
    N = weight.shape[0]
    y = x.new_empty((*x.shape[:-1], N))
    z = x.new_empty((0,)) if recompute else x.new_empty((*x.shape[:-1], N))
    return y, z


@torch.library.custom_op(
    "sixn::linear_gelu_bwd", mutates_args=(),
    schema="(Tensor dy, Tensor x, Tensor weight, Tensor? bias, Tensor z, bool recompute) "
           "-> (Tensor, Tensor, Tensor)")
def _linear_gelu_bwd_op(dy, x, weight, bias, z, recompute):
    """(dx, dW, db) of y = gelu(x @ W^T + b); z is the saved pre-activation, or ignored (and
    recomputed by re-running the forward GEMM) when recompute is set. db is empty without bias."""
    _validate(x, weight, bias)
    N, K = weight.shape
    x2 = x.reshape(-1, K)
    dy2 = dy.reshape(-1, N)
    if recompute:
        _, z2 = _launch_fwd(x2, weight, bias, store_y=False, store_z=True)
    else:
        z2 = z.reshape(-1, N)
    dx, dw, db = _launch_bwd(dy2, x2, weight, z2, bias is not None)
    return dx.view(x.shape), dw, db


@_linear_gelu_bwd_op.register_fake
def _(dy, x, weight, bias, z, recompute):
    N = weight.shape[0]
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight),
            weight.new_empty((N if bias is not None else 0,)))


def _setup_context(ctx, inputs, output):
    x, weight, bias, recompute = inputs
    _, z = output
    ctx.mark_non_differentiable(z)
    ctx.recompute = recompute
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, bias, z)


def _backward(ctx, dy, _dz):
    x, weight, bias, z = ctx.saved_tensors
    dx, dw, db = torch.ops.sixn.linear_gelu_bwd(dy, x, weight, bias, z, ctx.recompute)
    return dx, dw, (db if ctx.has_bias else None), None


_linear_gelu_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _mnk(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int, int]:
    N, K = weight.shape
    return x.numel() // K, N, K


@register_flop_formula(torch.ops.sixn.linear_gelu_fwd, get_raw=True)
def _linear_gelu_fwd_flops(x, weight, bias, recompute, *args, out_val=None, **kwargs) -> int:
    """The forward GEMM as launched (padded tiles), from model.flops.GemmExec."""
    M, N, K = _mnk(x, weight)
    return linear_gelu_exec(M, N, K, x.dtype, x.device, recompute).forward_flops(M, N, K)


@register_flop_formula(torch.ops.sixn.linear_gelu_bwd, get_raw=True)
def _linear_gelu_bwd_flops(dy, x, weight, bias, z, recompute, *args, out_val=None, **kwargs) -> int:
    """dX and dW GEMMs as launched, plus the forward GEMM again when recomputing."""
    M, N, K = _mnk(x, weight)
    return linear_gelu_exec(M, N, K, x.dtype, x.device, recompute).backward_flops(M, N, K)


# --------------------------------------------------------------------------------------------
# Public function and the plain PyTorch reference
# --------------------------------------------------------------------------------------------

def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                recompute: bool = False) -> torch.Tensor:
    """gelu(x @ weight^T + bias) (tanh GELU) with the GELU fused into the GEMM, differentiable.

    x (..., K), weight (N, K), bias (N,) or None -> (..., N) in x's dtype. recompute=False saves the
    pre-activation for backward, True recomputes it there (see the module docstring).

    Under torch.autocast the inputs are cast to the autocast dtype first, as F.linear's are (a
    custom op is not autocast by itself: in a bf16-autocast model x arrives in fp32 from LayerNorm)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, weight = x.to(dt), weight.to(dt)
        bias = None if bias is None else bias.to(dt)
    _validate(x, weight, bias)
    return torch.ops.sixn.linear_gelu_fwd(x, weight, bias, bool(recompute))[0]


def linear_gelu_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                          upcast: bool = False) -> torch.Tensor:
    """The same function in plain PyTorch (upcast=True: computed in float64, returned in x's dtype)."""
    dt = x.dtype
    if upcast:
        x, weight = x.double(), weight.double()
        bias = None if bias is None else bias.double()
    y = torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias), approximate="tanh")
    return y.to(dt)


__all__ = ["linear_gelu", "linear_gelu_exec", "linear_gelu_config",
           "linear_gelu_reference", "LinearGeluConfig"]
