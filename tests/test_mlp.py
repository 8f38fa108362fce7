"""kernels.mlp (fused linear + GELU) against float64 PyTorch, and its executed-FLOP spec.

On CPU the kernels run in the Triton interpreter (conftest sets TRITON_INTERPRET=1)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sixn.model import get_preset
from sixn.model.flops import ExecSpec, GemmExec

from sixn.kernels.mlp import linear_gelu, linear_gelu_config, linear_gelu_exec

from devices import DEVICE



def _inputs(x_shape, N, dtype, bias, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    K = x_shape[-1]
    x = torch.randn(x_shape, generator=g)
    w = torch.randn(N, K, generator=g) / K ** 0.5 * 1.5  # pre-activations of order 1-2: GELU's curve
    b = torch.randn(N, generator=g) * 0.5 if bias else None
    dy = torch.randn(*x_shape[:-1], N, generator=g)
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(x), cast(w), cast(b), cast(dy)


def _run(fn, x, w, b, dy):
    """Output and gradients (dx, dw, db) of fn(x, w, b) for upstream gradient dy (the inputs keep
    their strides: detach() shares them, where clone() could make them contiguous)."""
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    y = fn(*leaves)
    y.backward(dy)
    return [y.detach()] + [None if t is None else t.grad for t in leaves]


def _torch_fn(x, w, b):
    return F.gelu(F.linear(x, w, b), approximate="tanh")


def _max_err(a, ref):
    return (a.double() - ref).abs().max().item()


def _assert_close_report(name, got, ref, tol):
    """Fails with the count and first place of elements off by more than tol, and any NaN."""
    err = (got.double() - ref).abs()
    bad = (err > tol) | torch.isnan(got)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        pytest.fail(f"{name}: {int(bad.sum())} of {bad.numel()} elements off by > {tol:.3g} "
                    f"(max {err.max().item():.3g}, NaNs {int(torch.isnan(got).sum())}); first at {idx}: "
                    f"got {got[idx].item()}, want {ref[idx].item()}")


# Awkward shapes: M = 1, 17, 113 rows; ragged and even N and K against the 32-wide test tiles;
# leading batch dims (B, T, K).
SHAPES = [((1, 20), 33), ((17, 50), 70), ((113, 37), 45), ((2, 9, 48), 64), ((2, 32, 64), 96)]


@pytest.mark.parametrize("recompute", [False, True], ids=["save", "recompute"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("x_shape, N", SHAPES, ids=lambda v: str(v))
def test_fp32_matches_float64(x_shape, N, bias, recompute):
    x, w, b, dy = _inputs(x_shape, N, torch.float32, bias)
    tri = _run(lambda x, w, b: linear_gelu(x, w, b, recompute=recompute), x, w, b, dy)
    ref = _run(_torch_fn, *(None if t is None else t.double() for t in (x, w, b, dy)))
    assert tri[0].shape == (*x_shape[:-1], N) and tri[0].dtype == torch.float32
    for name, got, want in zip(("y", "dx", "dw", "db"), tri, ref):
        if want is None:
            assert got is None
            continue
        assert got.shape == want.shape and got.dtype == torch.float32
        _assert_close_report(name, got, want, tol=2e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("x_shape, N, recompute", [((113, 37), 45, False), ((2, 9, 48), 64, True)],
                         ids=["113x37x45-save", "2x9x48x64-recompute"])
def test_low_precision_within_twice_torch_error(x_shape, N, recompute, dtype):
    x, w, b, dy = _inputs(x_shape, N, dtype, bias=True, seed=1)
    tri = _run(lambda x, w, b: linear_gelu(x, w, b, recompute=recompute), x, w, b, dy)
    low = _run(_torch_fn, x, w, b, dy)  # PyTorch in the same low precision
    ref = _run(_torch_fn, *(t.double() for t in (x, w, b, dy)))
    for name, got, lp, want in zip(("y", "dx", "dw", "db"), tri, low, ref):
        assert got.dtype == dtype and got.shape == want.shape
        assert not torch.isnan(got).any(), name
        bound = 2 * _max_err(lp, want) + 1e-3 * max(1.0, want.abs().max().item())
        assert _max_err(got, want) <= bound, (name, _max_err(got, want), _max_err(lp, want))


def test_save_and_recompute_give_identical_gradients():
    """Recompute re-runs the same forward kernel, so Z and every gradient are bit-identical."""
    x, w, b, dy = _inputs((3, 13, 40), 50, torch.float32, bias=True, seed=2)
    saved = _run(lambda x, w, b: linear_gelu(x, w, b, recompute=False), x, w, b, dy)
    recomputed = _run(lambda x, w, b: linear_gelu(x, w, b, recompute=True), x, w, b, dy)
    for a, r in zip(saved, recomputed):
        assert torch.equal(a, r)
    # the forward op returns the pre-activation only when saving it
    y, z = torch.ops.sixn.linear_gelu_fwd(x, w, b, False)
    _, z_empty = torch.ops.sixn.linear_gelu_fwd(x, w, b, True)
    assert z_empty.numel() == 0
    torch.testing.assert_close(z, F.linear(x, w, b), atol=2e-5, rtol=1e-5)


def test_recompute_defaults_to_save():
    """recompute defaults to False (save z) in the spec and in what the backward executes."""
    M, N, K = 5, 40, 24
    x, w, b, dy = _inputs((M, K), N, torch.float32, bias=True)
    ex = linear_gelu_exec(M, N, K, torch.float32, DEVICE)
    assert ex.recompute is False
    assert ex == linear_gelu_exec(M, N, K, torch.float32, DEVICE, recompute=False)
    wl = w.clone().requires_grad_(True)
    y = linear_gelu(x, wl, b)
    with FlopCounterMode(display=False) as fc:
        y.backward(dy)
    assert fc.get_total_flops() == ex.backward_flops(M, N, K)
    assert fc.get_total_flops() < linear_gelu_exec(M, N, K, torch.float32, DEVICE,
                                                   recompute=True).backward_flops(M, N, K)


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(11, 3, 2 * 40, generator=g, device="cpu").to(DEVICE)
    x = base.transpose(0, 1)[..., ::2]             # (3, 11, 40), strided in every dim
    wt = torch.randn(40, 56, generator=g).to(DEVICE)
    w = wt.t()                                     # (56, 40), column-major
    b = torch.randn(2 * 56, generator=g).to(DEVICE)[::2]
    assert not x.is_contiguous() and not w.is_contiguous() and b.stride() == (2,)
    dy = torch.randn(3, 11, 56, generator=g).to(DEVICE)
    tri = _run(linear_gelu, x, w, b, dy)
    assert tri[1].shape == x.shape
    ref = _run(_torch_fn, x.double(), w.double(), b.double(), dy.double())
    for name, got, want in zip(("y", "dx", "dw", "db"), tri, ref):
        _assert_close_report(name, got, want, tol=2e-5 * max(1.0, want.abs().max().item()))
    # 2-D x read in place with a K stride of 2, and a transposed (column-major) upstream gradient
    x2 = torch.randn(19, 80, generator=g).to(DEVICE)[:, ::2]
    dy2 = torch.randn(56, 19, generator=g).to(DEVICE).t()
    tri = _run(linear_gelu, x2, w, b, dy2)
    ref = _run(_torch_fn, x2.double(), w.double(), b.double(), dy2.double())
    for name, got, want in zip(("y", "dx", "dw", "db"), tri, ref):
        _assert_close_report(name, got, want, tol=2e-5 * max(1.0, want.abs().max().item()))
    # a non-contiguous upstream gradient (expanded: stride 0)
    xl = x.detach().requires_grad_(True)
    linear_gelu(xl, w, b).sum().backward()
    xr = x.detach().double().requires_grad_(True)
    _torch_fn(xr, w.double(), b.double()).sum().backward()
    _assert_close_report("dx (expanded dy)", xl.grad, xr.grad, tol=2e-5 * xr.grad.abs().max().item())


@pytest.mark.parametrize("args, msg", [
    (lambda: (torch.randn(4, 8), torch.randn(2, 3, 8), None), r"weight must be 2-D \(N, K\)"),
    (lambda: (torch.randn(4, 8), torch.randn(16, 9), None), r"K = weight.shape\[1\] = 9"),
    (lambda: (torch.randn(4, 8), torch.randn(16, 8), torch.randn(15)), r"bias must have shape \(N,\) = \(16,\)"),
    (lambda: (torch.randn(4, 8), torch.randn(16, 8), torch.randn(16, 1)), r"bias must have shape"),
    (lambda: (torch.randn(4, 8), torch.randn(16, 8).double(), None), r"different dtypes"),
    (lambda: (torch.randn(4, 8).double(), torch.randn(16, 8).double(), None), r"float64 is not supported"),
    (lambda: (torch.randn(4, 8), torch.randn(16, 8, device="meta"), None), r"different devices"),
    (lambda: (torch.randn(4, 8), [[1.0] * 8] * 16, None), r"weight must be a torch.Tensor"),
])
def test_bad_input_errors(args, msg):
    x, w, b = (t.to(DEVICE) if isinstance(t, torch.Tensor) and t.device.type == "cpu" else t
               for t in args())
    with pytest.raises(ValueError, match=msg):
        linear_gelu(x, w, b)


def test_cpu_without_interpreter_is_an_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA tensors, or CPU tensors in the Triton interpreter"):
        linear_gelu(torch.randn(4, 8), torch.randn(16, 8))


def test_exec_spec_and_config_bad_input():
    with pytest.raises(ValueError, match="dtype torch.float64 is not supported"):
        linear_gelu_exec(4, 8, 8, torch.float64, "cpu")
    with pytest.raises(ValueError, match="N must be an int >= 1"):
        linear_gelu_exec(4, 0, 8, torch.float32, "cpu")
    with pytest.raises(ValueError, match="M must be an int"):
        linear_gelu_exec(4.0, 8, 8, torch.float32, "cpu")


@pytest.mark.parametrize("recompute", [False, True], ids=["save", "recompute"])
@pytest.mark.parametrize("x_shape, N", [((17, 40), 70), ((2, 16, 64), 32)], ids=["ragged", "even"])
def test_flop_counter_equals_exec(x_shape, N, recompute):
    x, w, b, dy = _inputs(x_shape, N, torch.float32, bias=True)
    M, K = x.numel() // x_shape[-1], x_shape[-1]
    ex = linear_gelu_exec(M, N, K, x.dtype, x.device, recompute=recompute)
    xl, wl, bl = (t.clone().requires_grad_(True) for t in (x, w, b))
    with FlopCounterMode(display=False) as fc:
        y = linear_gelu(xl, wl, bl, recompute=recompute)
    fwd = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        y.backward(dy)
    bwd = fc.get_total_flops()
    assert fwd == ex.forward_flops(M, N, K)
    assert bwd == ex.backward_flops(M, N, K)
    if DEVICE == "cpu":  # 32-wide tiles: every dimension padded up to a multiple of 32
        P = lambda n: -(-n // 32) * 32  # noqa: E731
        assert fwd == 2 * P(M) * P(N) * P(K)
        assert bwd == 2 * P(M) * P(K) * P(N) * (2 + recompute)
        if x_shape == (17, 40):
            assert fwd > 2 * M * N * K  # the padding is real work


def test_interpreter_executes_exactly_the_exec_spec(monkeypatch):
    """Every tl.dot the interpreter runs, 2 * m * n * k of its block shapes, against the spec."""
    if DEVICE != "cpu":
        pytest.skip("interpreter-only")
    from triton.runtime import interpreter as interp
    tally = []
    orig = interp.InterpreterBuilder.create_dot

    def create_dot(self, a, b, *args, **kwargs):
        (m, k), (k2, n) = a.data.shape, b.data.shape
        assert k == k2
        tally.append(2 * m * n * k)
        return orig(self, a, b, *args, **kwargs)

    monkeypatch.setattr(interp.InterpreterBuilder, "create_dot", create_dot)
    M, N, K = 33, 45, 70
    for recompute in (False, True):
        tally.clear()
        x, w, b, dy = _inputs((M, K), N, torch.bfloat16, bias=True)
        ex = linear_gelu_exec(M, N, K, x.dtype, x.device, recompute=recompute)
        y = linear_gelu(x, w.requires_grad_(True), b, recompute=recompute)
        assert sum(tally) == ex.forward_flops(M, N, K)
        tally.clear()
        y.backward(dy)
        assert sum(tally) == ex.backward_flops(M, N, K)


def test_tile_table_is_deterministic_and_documented():
    # interpreter: 32 x 32 x 32 for every product
    assert linear_gelu_exec(100, 200, 300, torch.float32, "cpu") == GemmExec(
        (32, 32, 32), (32, 32, 32), (32, 32, 32), recompute=False)
    # CUDA (computable without a GPU): 128 x 128 tiles, reduction 64 for 16-bit, 32 for fp32
    big = linear_gelu_exec(8192, 3072, 768, torch.bfloat16, "cuda", recompute=False)
    assert big == GemmExec((128, 128, 64), (128, 128, 64), (128, 128, 64), recompute=False)
    assert linear_gelu_exec(8192, 3072, 768, torch.float32, "cuda").fwd_tiles == (128, 128, 32)
    small = linear_gelu_config(64, 3072, 768, torch.float16, "cuda")
    assert (small.fwd.block_m, small.fwd.num_warps, small.dw.block_k) == (64, 4, 64)
    assert linear_gelu_config(8192, 3072, 768, torch.bfloat16, torch.device("cuda", 0)) == \
        linear_gelu_config(8192, 3072, 768, torch.bfloat16, "cuda")
    # a ragged reduction (K for the forward, N for dX, M for dW) takes a 32-deep block
    ragged = linear_gelu_exec(4 * 1023, 3072, 40, torch.bfloat16, "cuda")
    assert (ragged.fwd_tiles, ragged.dx_tiles, ragged.dw_tiles) == (
        (128, 128, 32), (128, 128, 64), (128, 128, 32))


def test_exec_spec_by_backend():
    from sixn.kernels.backends import exec_spec
    cfg = get_preset("tiny")
    assert exec_spec(cfg, 2, 32, torch.float32, "cpu") == ExecSpec()
    with pytest.raises(ValueError, match="not known analytically"):
        exec_spec(cfg.replace(backend="sdpa"), 2, 32, torch.float32, "cpu")
    with pytest.raises(ValueError, match="seq_len 65 exceeds n_ctx=64"):
        exec_spec(cfg, 2, 65, torch.float32, "cpu")
    with pytest.raises(ValueError, match="batch must be a positive int"):
        exec_spec(cfg, 0, 32, torch.float32, "cpu")
    from sixn.kernels.attention import attention_exec
    for dev, dt in (("cpu", torch.float32), ("cuda", torch.bfloat16)):
        spec = exec_spec(cfg.replace(backend="triton"), 3, 40, dt, dev)
        assert spec.name == "triton" and spec.causal
        assert spec.mlp_up == linear_gelu_exec(3 * 40, cfg.d_ff, cfg.d_model, dt, dev)
        assert spec.attention == attention_exec(40, cfg.head_dim, dt, dev)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("x_shape, N", [((4, 1023, 768), 3072), ((17, 768), 3072), ((128, 100), 1000)])
def test_gpu_matches_reference(x_shape, N, dtype):
    x, w, b, dy = _inputs(x_shape, N, dtype, bias=True, device="cuda")
    for recompute in (False, True):
        tri = _run(lambda x, w, b: linear_gelu(x, w, b, recompute=recompute), x, w, b, dy)
        low = _run(_torch_fn, x, w, b, dy)
        ref = _run(_torch_fn, *(t.double() for t in (x, w, b, dy)))
        for name, got, lp, want in zip(("y", "dx", "dw", "db"), tri, low, ref):
            bound = 2 * _max_err(lp, want) + 1e-3 * max(1.0, want.abs().max().item())
            assert _max_err(got, want) <= bound, (name, dtype, recompute)
