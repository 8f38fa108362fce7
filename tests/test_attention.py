"""kernels.attention: output, lse and every gradient vs float64 PyTorch, FLOP accounting of what the
kernels execute (dispatcher and interpreter tl.dot counts), layouts, errors, torch.library wiring.

On CPU the kernels run in the Triton interpreter (conftest sets TRITON_INTERPRET=1)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import sixn.kernels  # noqa: F401  (sets TRITON_INTERPRET without CUDA, registers the sixn ops)
from sixn.kernels.attention import attention, attention_exec, attention_reference, kernel_config
from sixn.model.flops import AttentionExec, visited_block_pairs

from devices import DEVICE, HAS_CUDA


attn_mod = sys.modules["sixn.kernels.attention"]  # `kernels.attention` the attribute is the function


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float = 0.0):
    """allclose in float64, reporting the count and first places of mismatches and NaNs."""
    got64, want64 = got.detach().double().cpu(), want.detach().double().cpu()
    assert got64.shape == want64.shape, f"{name}: shape {tuple(got64.shape)} != {tuple(want64.shape)}"
    nan = torch.isnan(got64) & ~torch.isnan(want64)
    err = (got64 - want64).abs()
    bad = nan | (err > atol + rtol * want64.abs())
    if bad.any():
        idx = bad.nonzero()[:5].tolist()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.numel()} elements mismatch ({int(nan.sum())} NaN), "
            f"max |err| {err[~nan].max().item() if (~nan).any() else float('nan'):.3e} "
            f"(atol {atol:.1e}, rtol {rtol:.1e}); first at (b, h, t, d) {idx}: "
            f"got {[got64[tuple(i)].item() for i in idx]}, want {[want64[tuple(i)].item() for i in idx]}")


def assert_lowp_close(name: str, got: torch.Tensor, ref: torch.Tensor, low: torch.Tensor):
    """Low precision: max|got - ref| <= 2 max|low - ref| + 2 eps(dtype) max|ref|, where ref is the
    exact (float64) result and low the same computation in PyTorch in got's dtype. The atol is two
    roundings at the tensor's largest magnitude: the torch error is sometimes small by luck at the
    largest elements, and the FlashAttention backward takes delta = rowsum(dO * O) from the
    rounded O (see the module docstring)."""
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    ref = ref.detach().double().cpu()
    err = (got.detach().double().cpu() - ref).abs().max().item()
    err_low = (low.detach().double().cpu() - ref).abs().max().item()
    atol = 2 * torch.finfo(got.dtype).eps * ref.abs().max().item() + 1e-5
    assert err <= 2 * err_low + atol, (
        f"{name}: max|tri - ref| = {err:.3e} > 2 * max|torch_{got.dtype} - ref| ({err_low:.3e}) "
        f"+ {atol:.2e}")


def make_qkv(B, H, T, D, dtype, device=DEVICE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, D, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
            for _ in range(3)]


def run_tri(q, k, v, do, causal, sm_scale=None):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, causal=causal, sm_scale=sm_scale)
    out.backward(do)
    return out, q.grad, k.grad, v.grad


def run_ref(q, k, v, do, causal, dtype, sm_scale=None, upcast=True):
    """The reference in `dtype` (float64 for the exact one); returns out and grads."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = attention_reference(q, k, v, causal=causal, sm_scale=sm_scale, upcast=upcast)
    out.backward(do.to(dtype))
    return out, q.grad, k.grad, v.grad


NAMES = ("out", "dq", "dk", "dv")

# (B, H, T, D, causal): every T in {1, 17, 113, 257} and D in {16, 32, 64, 128} appears, both
# masks, B*H > 1, plus padded head dims (40, 8) and unequal B/H.
FP32_CASES = [
    (2, 3, 1, 16, True),
    (1, 2, 17, 32, False),
    (2, 1, 17, 128, True),
    (1, 2, 113, 64, True),
    (1, 2, 113, 16, False),
    (1, 2, 257, 32, True),
    (1, 2, 257, 128, False),
    (2, 2, 65, 40, True),
    (1, 2, 50, 8, False),
]
LOWP_CASES = [
    (torch.bfloat16, 1, 2, 113, 64, True),
    (torch.bfloat16, 2, 1, 257, 16, False),
    (torch.bfloat16, 1, 2, 17, 128, True),
    (torch.float16, 2, 1, 113, 128, False),
    (torch.float16, 1, 2, 257, 32, True),
    (torch.float16, 2, 2, 1, 64, True),
]


# --------------------------------------------------------------------------------------------
# correctness
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("B, H, T, D, causal", FP32_CASES)
def test_fp32_matches_float64(B, H, T, D, causal):
    q, k, v = make_qkv(B, H, T, D, torch.float32)
    do = make_qkv(B, H, T, D, torch.float32, seed=1)[0]
    tri = run_tri(q, k, v, do, causal)
    ref = run_ref(q, k, v, do, causal, torch.float64)
    for name, a, b in zip(NAMES, tri, ref):
        assert a.dtype == torch.float32
        assert_close(f"fp32 {name} T={T} D={D} causal={causal}", a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype, B, H, T, D, causal", LOWP_CASES)
def test_low_precision_within_twice_torch_error(dtype, B, H, T, D, causal):
    """max|tri - ref64| <= 2 max|torch_lowp - ref64| + atol, for out and each gradient."""
    q, k, v = make_qkv(B, H, T, D, dtype)
    do = make_qkv(B, H, T, D, dtype, seed=1)[0]
    tri = run_tri(q, k, v, do, causal)
    ref = run_ref(q, k, v, do, causal, torch.float64)
    low = run_ref(q, k, v, do, causal, dtype, upcast=False)
    for name, a, r, lo in zip(NAMES, tri, ref, low):
        assert a.dtype == dtype
        assert_lowp_close(f"{dtype} {name} T={T} D={D} causal={causal}", a, r, lo)


def test_lse_and_its_gradient():
    """The op's lse is log sum exp of the scaled, masked scores, and d lse flows into dq, dk."""
    B, H, T, D, scale = 1, 2, 37, 32, 0.3
    q, k, v = make_qkv(B, H, T, D, torch.float32)
    g_out, g_lse = make_qkv(B, H, T, D, torch.float32, seed=2)[0], torch.randn(B, H, T)
    qt, kt, vt = (t.clone().requires_grad_() for t in (q, k, v))
    out, lse = torch.ops.sixn.attention_fwd(qt, kt, vt, True, scale)
    assert lse.dtype == torch.float32 and lse.shape == (B, H, T)
    ((out * g_out).sum() + (lse * g_lse.to(lse.device)).sum()).backward()

    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    s = (q64 @ k64.transpose(-2, -1)) * scale
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    lse_ref = torch.logsumexp(s, dim=-1)
    out_ref = torch.softmax(s, dim=-1) @ v64
    ((out_ref * g_out.double().cpu()).sum() + (lse_ref * g_lse.double()).sum()).backward()
    assert_close("lse", lse, lse_ref, atol=1e-5, rtol=1e-5)
    for name, a, b in (("dq", qt.grad, q64.grad), ("dk", kt.grad, k64.grad), ("dv", vt.grad, v64.grad)):
        assert_close(f"{name} with d lse", a, b, atol=2e-5, rtol=1e-4)

    # lse alone (out unused: its gradient reaches the backward as None)
    qt, kt, vt = (t.clone().requires_grad_() for t in (q, k, v))
    torch.ops.sixn.attention_fwd(qt, kt, vt, True, scale)[1].sum().backward()
    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    s = ((q64 @ k64.transpose(-2, -1)) * scale).masked_fill(
        ~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    torch.logsumexp(s, dim=-1).sum().backward()
    assert_close("dq from lse alone", qt.grad, q64.grad, atol=2e-5, rtol=1e-4)
    assert_close("dk from lse alone", kt.grad, k64.grad, atol=2e-5, rtol=1e-4)
    assert vt.grad is None or not vt.grad.any()


def test_sm_scale_is_used():
    q, k, v = make_qkv(1, 1, 20, 16, torch.float32)
    out = attention(q, k, v, causal=False, sm_scale=0.05)
    assert_close("sm_scale=0.05", out, attention_reference(q.double(), k.double(), v.double(),
                                                           causal=False, sm_scale=0.05), atol=1e-5)
    assert (out - attention(q, k, v, causal=False)).abs().max() > 1e-2


def test_noncontiguous_inputs_give_the_same_result():
    """(B, T, H, D) tensors transposed to (B, H, T, D), and q/k/v sliced out of one packed
    (B, T, 3, H, D) tensor as the model does, read in place: bitwise equal to contiguous copies."""
    B, T, H, D = 2, 45, 3, 32
    g = torch.Generator().manual_seed(3)
    packed = torch.randn(B, T, 3, H, D, generator=g).to(DEVICE)
    views = [packed[:, :, i].transpose(1, 2) for i in range(3)]        # (B, H, T, D), strided
    assert not any(t.is_contiguous() for t in views)
    do = torch.randn(B, T, H, D, generator=g).to(DEVICE).transpose(1, 2)  # strided grad too
    got = run_tri(*views, do, causal=True)
    want = run_tri(*(t.contiguous() for t in views), do.contiguous(), causal=True)
    for name, a, b in zip(NAMES, got, want):
        assert torch.equal(a, b), f"{name}: strided inputs give a different result"
    ref = run_ref(*views, do, True, torch.float64)
    assert_close("strided out vs float64", got[0], ref[0], atol=2e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------
# what the kernels execute: FLOP accounting
# --------------------------------------------------------------------------------------------

def test_attention_exec_describes_kernel_config():
    for dev in ("cpu", "cuda"):
        for T, D, dt in [(1, 16, torch.float32), (113, 40, torch.bfloat16), (4096, 128, torch.float16),
                         (2048, 64, torch.bfloat16), (300, 256, torch.float32)]:
            cfg = kernel_config(T, D, dt, dev)
            ex = attention_exec(T, D, dt, dev)
            assert ex.blocked and ex.fwd_dots == 2
            assert ex.fwd_blocks == (cfg.fwd.block_m, cfg.fwd.block_n)
            assert ex.bwd_passes == ((cfg.dkdv.block_m, cfg.dkdv.block_n, 4),
                                     (cfg.dq.block_m, cfg.dq.block_n, 3))
            assert ex.block_d == max(16, 1 << (D - 1).bit_length()) >= D
            assert kernel_config(T, D, dt, dev) == cfg                       # deterministic
    # H100 configs use large tiles; short sequences get smaller ones
    big = kernel_config(4096, 64, torch.bfloat16, "cuda")
    assert big.fwd.block_m == 128 and big.fwd.block_n == 64
    small = kernel_config(17, 64, torch.bfloat16, "cuda")
    assert max(small.fwd.block_m, small.fwd.block_n, small.dkdv.block_n, small.dq.block_m) == 32


@pytest.mark.parametrize("T, D, causal, dtype", [
    (113, 32, True, torch.float32),
    (96, 64, False, torch.bfloat16),
    (1, 16, True, torch.float16),
])
def test_flop_counter_mode_counts_what_the_kernels_execute(T, D, causal, dtype):
    B, H = 2, 3
    q, k, v = (t.requires_grad_() for t in make_qkv(B, H, T, D, dtype))
    with FlopCounterMode(display=False) as fc:
        out = attention(q, k, v, causal=causal)
        out.backward(torch.ones_like(out))
    ex = attention_exec(T, D, dtype, q.device)
    fwd, bwd = ex.forward_flops(B, H, T, D, causal), ex.backward_flops(B, H, T, D, causal)
    counts = fc.get_flop_counts()["Global"]
    assert counts[torch.ops.sixn.attention_fwd] == fwd
    assert counts[torch.ops.sixn.attention_bwd] == bwd
    assert fc.get_total_flops() == fwd + bwd
    # spelled out from the tiles: 2 products forward, 4 + 3 backward, each 2 bm bn block_d
    cfg = kernel_config(T, D, dtype, q.device)
    bd = cfg.block_d
    tiles = lambda p: visited_block_pairs(T, p.block_m, p.block_n, causal)  # noqa: E731
    assert fwd == B * H * tiles(cfg.fwd) * 2 * 2 * cfg.fwd.block_m * cfg.fwd.block_n * bd
    assert bwd == B * H * (tiles(cfg.dkdv) * 4 * 2 * cfg.dkdv.block_m * cfg.dkdv.block_n * bd
                           + tiles(cfg.dq) * 3 * 2 * cfg.dq.block_m * cfg.dq.block_n * bd)
    dense = AttentionExec()  # the torch reference: full T x T squares, backward 2x forward
    if causal and T > 1:     # tiles above the diagonal are skipped: less than the dense square
        assert fwd < dense.forward_flops(B, H, T, D, causal)
        assert fwd + bwd != (dense.forward_flops(B, H, T, D, causal)
                             + dense.backward_flops(B, H, T, D, causal))
    blocks = (cfg.fwd.block_m, cfg.fwd.block_n, cfg.dkdv.block_m, cfg.dkdv.block_n,
              cfg.dq.block_m, cfg.dq.block_n)
    if not causal and bd == D and all(T % b == 0 for b in blocks):
        # whole tiles and no mask: the dense square, and the backward's QK^T recompute on top
        assert fwd == dense.forward_flops(B, H, T, D, causal)
        assert bwd == dense.backward_flops(B, H, T, D, causal) * 7 // 4


class _DotTally:
    """Counts 2 M N K of every tl.dot the Triton interpreter executes (its builder's create_dot)."""

    def __init__(self, monkeypatch):
        from triton.runtime import interpreter
        cls = getattr(interpreter, "InterpreterBuilder", None)
        if cls is None or not hasattr(cls, "create_dot"):
            pytest.skip("this triton's interpreter has no InterpreterBuilder.create_dot to count")
        orig = cls.create_dot
        self.flops = 0

        def create_dot(builder, a, b, *args, **kwargs):
            (m, kk), (k2, n) = a.data.shape, b.data.shape
            assert kk == k2
            self.flops += 2 * m * n * kk
            return orig(builder, a, b, *args, **kwargs)

        monkeypatch.setattr(cls, "create_dot", create_dot)


def _cuda_config_in_interpreter(T, D, dtype, device):
    """The H100 block sizes, run in the interpreter (bf16 products upcast there: CPU tensors)."""
    return _REAL_CONFIG(T, D, dtype, "cuda")


_REAL_CONFIG = attn_mod.kernel_config


@pytest.mark.skipif(HAS_CUDA, reason="counts tl.dot in the Triton interpreter")
@pytest.mark.parametrize("blocks", ["interpreter", "h100"])
@pytest.mark.parametrize("T, D, causal, dtype", [
    (113, 40, True, torch.float32),
    (200, 64, False, torch.bfloat16),
    (300, 128, True, torch.float16),
])
def test_interpreter_dot_count_equals_attention_exec(monkeypatch, blocks, T, D, causal, dtype):
    """The loops visit exactly model.flops.visited_block_pairs' tiles with the stated products:
    counted from the tl.dot calls the interpreter executes, with the interpreter's block sizes
    and with the H100 ones (which also checks the H100 tilings' results)."""
    if blocks == "h100":
        monkeypatch.setattr(attn_mod, "kernel_config", _cuda_config_in_interpreter)
    B, H = 1, 2
    q, k, v = make_qkv(B, H, T, D, dtype)
    do = make_qkv(B, H, T, D, dtype, seed=1)[0]
    tally = _DotTally(monkeypatch)
    qt, kt, vt = (t.clone().requires_grad_() for t in (q, k, v))
    out = attention(qt, kt, vt, causal=causal)
    fwd_counted = tally.flops
    out.backward(do)
    bwd_counted = tally.flops - fwd_counted
    ex = attn_mod.attention_exec(T, D, dtype, "cpu")
    assert (fwd_counted, bwd_counted) == (ex.forward_flops(B, H, T, D, causal),
                                          ex.backward_flops(B, H, T, D, causal))
    if blocks == "h100":
        assert ex.fwd_blocks[0] >= 64    # really the large tiles
        ref = run_ref(q, k, v, do, causal, torch.float64)
        low = run_ref(q, k, v, do, causal, dtype, upcast=False) if dtype != torch.float32 else None
        for i, (name, a, r) in enumerate(zip(NAMES, (out, qt.grad, kt.grad, vt.grad), ref)):
            if low is None:
                assert_close(f"h100 tiles {name}", a, r, atol=2e-5, rtol=1e-4)
            else:
                assert_lowp_close(f"h100 tiles {name}", a, r, low[i])


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

def _t(*shape, dtype=torch.float32, device=DEVICE):
    return torch.zeros(*shape, dtype=dtype, device=device)


@pytest.mark.parametrize("args, kwargs, msg", [
    ((_t(2, 8, 16), _t(2, 8, 16), _t(2, 8, 16)), {}, "must be 4-D (B, H, T, D), got 3-D"),
    ((_t(1, 2, 8, 16), _t(1, 2, 9, 16), _t(1, 2, 8, 16)), {}, "k, v one shape (B, H_kv, T, D)"),
    ((_t(1, 2, 8, 16), _t(1, 2, 8, 16, dtype=torch.float16), _t(1, 2, 8, 16)), {},
     "different dtypes"),
    ((_t(1, 2, 8, 16, dtype=torch.float64),) * 3, {}, "dtype torch.float64 is not supported"),
    ((_t(1, 2, 8, 16, dtype=torch.int32),) * 3, {}, "supported: ['torch.float16'"),
    ((_t(1, 2, 8, 512),) * 3, {}, "head dim 512 is not supported; supported: 1 to 256"),
    ((_t(1, 2, 0, 16),) * 3, {}, "T must be an int >= 1"),
    ((_t(0, 2, 8, 16),) * 3, {}, "need B >= 1 and H >= 1"),
    ((_t(1, 2, 8, 16), _t(1, 2, 8, 16, device="meta"), _t(1, 2, 8, 16)), {}, "different devices"),
    ((_t(1, 2, 8, 16),) * 3, {"sm_scale": float("nan")}, "sm_scale must be a finite float > 0"),
    ((_t(1, 2, 8, 16),) * 3, {"causal": 1}, "causal must be a bool"),
    (([[1.0]], _t(1, 2, 8, 16), _t(1, 2, 8, 16)), {}, "q must be a torch.Tensor"),
])
def test_bad_input_raises_value_error(args, kwargs, msg):
    with pytest.raises(ValueError) as e:
        attention(*args, **kwargs)
    assert msg in str(e.value), str(e.value)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = _t(1, 1, 4, 16, device="cpu")
    with pytest.raises(ValueError, match=r"tensors on cpu are not supported.*TRITON_INTERPRET=1"):
        attention(q, q, q)


def test_attention_exec_rejects_unsupported():
    with pytest.raises(ValueError, match="head dim 300"):
        attention_exec(64, 300, torch.float16, "cuda")
    with pytest.raises(ValueError, match="dtype torch.float64 is not supported"):
        attention_exec(64, 64, torch.float64, "cuda")
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        attention_exec(0, 64, torch.float16, "cuda")


# --------------------------------------------------------------------------------------------
# torch.library wiring
# --------------------------------------------------------------------------------------------

def test_opcheck_forward_and_backward_ops():
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 33, 16, torch.float32))
    torch.library.opcheck(torch.ops.sixn.attention_fwd, (q, k, v, True, 0.3))
    out, lse = torch.ops.sixn.attention_fwd(q.detach(), k.detach(), v.detach(), True, 0.3)
    do = torch.randn_like(out)
    args = (do, q.detach(), k.detach(), v.detach(), out, lse, None, True, 0.3)
    torch.library.opcheck(torch.ops.sixn.attention_bwd, args,
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph_aot_eager():
    q, k, v = make_qkv(1, 2, 40, 32, torch.float32)
    do = make_qkv(1, 2, 40, 32, torch.float32, seed=1)[0]
    want = run_tri(q, k, v, do, True)
    fn = torch.compile(lambda a, b, c: attention(a, b, c, causal=True), backend="aot_eager",
                       fullgraph=True)
    qt, kt, vt = (t.clone().requires_grad_() for t in (q, k, v))
    out = fn(qt, kt, vt)
    out.backward(do)
    for name, a, b in zip(NAMES, (out, qt.grad, kt.grad, vt.grad), want):
        assert torch.equal(a, b), f"compiled {name} differs from eager"


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T, D, causal", [(1023, 64, True), (4096, 128, True), (2000, 64, False),
                                          (777, 40, True)])
def test_gpu_long_sequences(dtype, T, D, causal):
    B, H = 2, 4
    q, k, v = make_qkv(B, H, T, D, dtype, device="cuda")
    do = make_qkv(B, H, T, D, dtype, device="cuda", seed=1)[0]
    tri = run_tri(q, k, v, do, causal)
    ref = run_ref(q, k, v, do, causal, torch.float64)
    low = run_ref(q, k, v, do, causal, dtype, upcast=False)
    for name, a, r, lo in zip(NAMES, tri, ref, low):
        assert_lowp_close(f"gpu {dtype} {name} T={T} D={D}", a, r, lo)


@pytest.mark.gpu
def test_gpu_fp32_is_ieee_not_tf32():
    q, k, v = make_qkv(2, 2, 513, 64, torch.float32, device="cuda")
    do = make_qkv(2, 2, 513, 64, torch.float32, device="cuda", seed=1)[0]
    for name, a, b in zip(NAMES, run_tri(q, k, v, do, True), run_ref(q, k, v, do, True, torch.float64)):
        assert_close(f"gpu fp32 {name}", a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.gpu
def test_gpu_offsets_past_2_31():
    """B*H*T*D > 2^31: the last heads, whose elements lie past 2^31, are still right."""
    B, H, T, D = 1, 4100, 4096, 128
    if torch.cuda.get_device_properties(0).total_memory < 48 * 2 ** 30:
        pytest.skip("needs about 40 GiB of GPU memory")
    assert B * H * T * D > 2 ** 31
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    out = attention(q, k, v, causal=True)
    do = torch.randn_like(out)
    out.backward(do)
    last = slice(H - 2, H)
    ref = run_ref(q[:, last], k[:, last], v[:, last], do[:, last], True, torch.float32)
    low = run_ref(q[:, last], k[:, last], v[:, last], do[:, last], True, torch.bfloat16, upcast=False)
    for name, a, r, lo in zip(NAMES, (out, q.grad, k.grad, v.grad), ref, low):
        assert_lowp_close(f"last heads {name}", a[:, last], r, lo)
