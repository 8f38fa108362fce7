"""Triton GQA / sliding-window attention and the fused SwiGLU in the interpreter: float64
references forward and backward, and the interpreter's count of the executed block products
against model.flops integer for integer."""

import pytest
import torch

from sixn.bench.counters import count_step
from sixn.bench.counters.interpreter import count_interpreter
from sixn.kernels.attention import attention, attention_exec, attention_reference
from sixn.kernels.backends import exec_spec
from sixn.kernels.swiglu import gated_reference, swiglu, swiglu_exec
from sixn.model import GPTConfig, executed
from sixn.model.flops import GROUPS

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on the CPU")


def _grads(fn, inputs, dout):
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    out = fn(*leaves)
    out.backward(dout)
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("H, Hk, T, D, window", [
    (4, 2, 40, 16, None),   # GQA, ragged T
    (3, 1, 37, 16, 7),      # MQA + window shorter than a tile
    (2, 2, 48, 16, 20),     # window spanning tiles
    (2, 1, 33, 40, 1),      # window 1 (each query sees itself), padded head dim
])
def test_gqa_window_attention_matches_float64(H, Hk, T, D, window):
    g = torch.Generator().manual_seed(H * T + D)
    q = torch.randn(1, H, T, D, generator=g)
    k, v = (torch.randn(1, Hk, T, D, generator=g) for _ in range(2))
    do = torch.randn(1, H, T, D, generator=g)
    got = _grads(lambda a, b, c: attention(a, b, c, causal=True, window=window), (q, k, v), do)
    ref = _grads(lambda a, b, c: attention_reference(a, b, c, causal=True, window=window),
                 [t.double() for t in (q, k, v)], do.double())
    for a, b in zip(got, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("M, N, K, bias", [(20, 24, 40, True), (33, 16, 17, False)])
def test_swiglu_matches_float64(M, N, K, bias):
    g = torch.Generator().manual_seed(M + N + K)
    x = torch.randn(M, K, generator=g)
    wg, wu = (torch.randn(N, K, generator=g) / K ** 0.5 for _ in range(2))
    bg, bu = (torch.randn(N, generator=g) if bias else None for _ in range(2))
    dh = torch.randn(M, N, generator=g)
    got = _grads(swiglu, (x, wg, wu, bg, bu), dh)
    ref = _grads(lambda *a: gated_reference(*a, act="silu"),
                 [None if t is None else t.double() for t in (x, wg, wu, bg, bu)], dh.double())
    for a, b in zip(got, ref):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=2e-5)


def test_swiglu_exec_counts_two_padded_products():
    ex = swiglu_exec(33, 16, 17, torch.float32, "cpu")
    # interpreter tiles 16: pad(33) = 48, pad(17) = 32
    assert ex.forward_flops(33, 16, 17) == 2 * 2 * 48 * 16 * 32
    assert ex.backward_flops(33, 16, 17) == 2 * (2 * 48 * 32 * 16 + 2 * 16 * 32 * 48)


@pytest.mark.parametrize("cfg", [
    GPTConfig(n_layer=1, d_model=32, d_attn=32, n_head=4, n_kv_head=2, d_ff=40, n_ctx=40,
              n_vocab=48, mlp="swiglu", norm="rmsnorm", pos="rope", bias=False, window=9,
              tie_head=False),
    GPTConfig(n_layer=1, d_model=32, d_attn=32, n_head=2, n_kv_head=1, d_ff=24, n_ctx=40,
              n_vocab=48, mlp="swiglu", bias=True),
], ids=["gqa-window-swiglu", "mqa-swiglu-bias"])
def test_interpreter_count_equals_analytic_and_torch_reference(cfg):
    """The interpreter counts every tl.dot the kernels execute in a training step (triton backend).
    It equals model.flops.executed for the kernels' tiles, and it differs from the dispatcher's count
    of the torch reference on the same shape (dense T x T attention, exact GEMMs, counted by
    PyTorch's own formulas) by exactly the tile overheads: two independent counts, one analytic gap."""
    B, T = 1, 37
    sc = count_step(cfg, B, T, counter="interpreter", backend="triton")
    spec = exec_spec(cfg.replace(backend="triton"), B, T, torch.float32, "cpu")
    ex = executed(cfg, B, T, spec)
    assert {g: sc.by_group[g] for g in GROUPS if g != "other"} == {
        g: v for g, v in ex.by_group().items() if g != "other"}
    assert sc.extra["kernel_dot_flops"] > 0
    ref = count_step(cfg, B, T, counter="dispatch", backend="torch")
    gap = ex.matmul_total - executed(cfg, B, T).matmul_total
    assert gap != 0
    assert sc.total - ref.total == gap
