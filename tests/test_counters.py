"""The executed-FLOP counters (bench.counters) against model.flops.executed (ncu: test_ncu.py)."""

import sys
import random

import pytest
import torch

from sixn.bench import counters
from sixn.kernels.backends import exec_spec
from sixn.bench.counters import CounterError, count_step
from sixn.bench.counters.base import exclusive_counts, group_of_module
from sixn.model import GPTConfig, executed, get_preset
from sixn.model.flops import GROUPS

from devices import HAS_CUDA


def _random_config(rng: random.Random) -> GPTConfig:
    n_head = rng.choice([1, 2, 3, 4])
    return GPTConfig(n_layer=rng.randint(1, 3), d_model=rng.choice([16, 24, 40, 64]),
                     d_attn=n_head * rng.choice([8, 16, 24]), d_ff=rng.choice([32, 56, 96]),
                     n_head=n_head, n_ctx=rng.choice([8, 13, 32, 50]),
                     n_vocab=rng.choice([50, 97, 256]), tie_head=rng.random() < 0.5,
                     bias=rng.random() < 0.7)


def _matmul_groups(ex):
    return {g: v for g, v in ex.by_group().items() if g != "other"}


@pytest.mark.parametrize("seed", range(6))
def test_dispatch_equals_executed_by_group(seed):
    """FlopCounterMode on a training step of the torch backend == model.flops.executed, in total and
    for every group (attribution by module), on random shapes with ragged T and batch."""
    rng = random.Random(seed)
    cfg = _random_config(rng)
    B, T = rng.randint(1, 3), rng.randint(1, cfg.n_ctx)
    sc = count_step(cfg, B, T, counter="dispatch", device="meta" if seed % 2 else "cpu")
    ex = executed(cfg, B, T)
    assert sc.total == ex.matmul_total
    assert {g: sc.by_group[g] for g in GROUPS if g != "other"} == _matmul_groups(ex)
    assert sc.by_group["other"] == 0
    assert sum(k["flops"] for k in sc.by_kernel) == sc.total
    assert sc.raw["Global"]  # FlopCounterMode's own hierarchy is kept as the raw output


def test_dispatch_meta_equals_cpu_and_dtype():
    cfg = get_preset("tiny")
    a = count_step(cfg, 2, 40, device="meta")
    b = count_step(cfg, 2, 40, device="cpu", dtype="bfloat16")
    assert a.total == b.total and a.by_group == b.by_group
    assert (a.device, b.dtype) == ("meta", "bfloat16")


def test_group_of_module_and_exclusive_counts():
    assert group_of_module("GPT.blocks.3.attn.qkv") == "qkv"
    assert group_of_module("GPT.blocks.0.attn.proj") == "project"
    assert group_of_module("GPT.blocks.0.attn") == "attention"
    assert group_of_module("GPT.blocks.1.mlp.fc") == "feedforward"
    assert group_of_module("GPT.blocks.1.mlp") == "feedforward"
    assert group_of_module("GPT") == "de-embed"
    assert group_of_module("GPT.blocks.0") == "other"
    # the counter's nesting: each key holds its children's counts too
    counts = {"Global": {"mm": 10, "bmm": 4}, "GPT": {"mm": 10, "bmm": 4},
              "GPT.blocks.0.attn": {"mm": 7, "bmm": 4}, "GPT.blocks.0.attn.qkv": {"mm": 5}}
    ex = exclusive_counts(counts)
    assert ex["GPT"] == {"mm": 3}
    assert ex["GPT.blocks.0.attn"] == {"mm": 2, "bmm": 4}
    assert ex["GPT.blocks.0.attn.qkv"] == {"mm": 5}
    assert ex["Global"] == {}


@pytest.mark.parametrize("bad, msg", [
    (dict(counter="bogus"), "unknown counter"),
    (dict(backend="sdpa"), "not supported by the counters"),
    (dict(seq_len=65), r"seq_len must be an int in \[1, n_ctx=64\]"),
    (dict(batch=0), "batch must be a positive int"),
    (dict(counter="interpreter", device="meta"), "runs on the CPU"),
    (dict(backend="triton", device="meta"), "meta device runs no kernels"),
    (dict(dtype="int8"), "unknown dtype"),
])
def test_count_step_bad_input(bad, msg):
    kw = dict(batch=1, seq_len=16)
    kw.update(bad)
    with pytest.raises(ValueError, match=msg):
        count_step(get_preset("tiny"), **kw)


# ------------------------------------------------------------------------------------------------
# interpreter
# ------------------------------------------------------------------------------------------------

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")


@triton.jit
def _skip_mm(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # C = A @ B with a causal-style skip: row block i only visits k blocks starting before (i+1) BM
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        if k0 < (pid_m + 1) * BM:
            a = tl.load(a_ptr + rm[:, None] * K + (k0 + rk)[None, :],
                        mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
            b = tl.load(b_ptr + (k0 + rk)[:, None] * N + rn[None, :],
                        mask=((k0 + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
            acc += tl.dot(a, b)
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


@pytest.mark.skipif(HAS_CUDA, reason="runs the Triton interpreter on CPU tensors")
@pytest.mark.parametrize("M, N, K", [(40, 24, 56), (16, 16, 16), (1, 33, 70)])
def test_interpreter_hook_counts_executed_block_products(M, N, K):
    """The tl.dot hook counts what the kernel runs: skipped blocks not, ragged blocks padded."""
    a, b, c = torch.randn(M, K), torch.randn(K, N), torch.empty(M, N)
    tally = counters.interpreter._DotTally(lambda: "GPT.blocks.0.mlp")
    with counters.interpreter._interpreter_hooks(tally):
        _skip_mm[(triton.cdiv(M, 16), triton.cdiv(N, 16))](a, b, c, M, N, K, BM=16, BN=16, BK=16)
    visited = sum(1 for i in range(-(-M // 16)) for k0 in range(0, K, 16) if k0 < (i + 1) * 16)
    n_blocks = -(-N // 16)
    assert tally.flops == {("_skip_mm", "feedforward"): visited * n_blocks * 2 * 16 ** 3}
    assert tally.dots[("_skip_mm", "feedforward")] == visited * n_blocks
    assert tally.launches[("_skip_mm", "feedforward")] == 1
    # the hook is gone afterwards and the result is right
    from triton.runtime.interpreter import GridExecutor, InterpreterBuilder
    assert InterpreterBuilder.create_dot.__name__ == "create_dot"
    assert GridExecutor.__call__.__name__ == "__call__"
    ref = torch.zeros(M, N)
    for i in range(-(-M // 16)):
        rows = slice(i * 16, min((i + 1) * 16, M))
        kmax = min(((i + 1) * 16 + 15) // 16 * 16, K)
        ref[rows] = a[rows, :kmax] @ b[:kmax]
    torch.testing.assert_close(c, ref, rtol=1e-4, atol=1e-4)


def test_interpreter_torch_backend_equals_dispatch():
    cfg = get_preset("tiny")
    a = count_step(cfg, 2, 24, counter="interpreter", backend="torch")
    b = count_step(cfg, 2, 24, counter="dispatch", device="cpu")
    assert a.total == b.total == executed(cfg, 2, 24).matmul_total
    assert a.by_group == b.by_group
    assert a.extra["kernel_dot_flops"] == 0


@pytest.mark.skipif(HAS_CUDA, reason="interpreter counter test runs on the CPU")
def test_interpreter_and_dispatch_equal_executed_triton_backend():
    """The key test: the Triton interpreter counts the block products the kernels really execute in
    one training step (ragged T = 40: causal block skipping, padded tiles and the backward
    recompute all show), plus the PyTorch-side matmuls; that equals model.flops.executed for the
    kernels' spec exactly, in integers, by group."""
    from sixn.kernels.backends import exec_spec
    cfg = get_preset("tiny").replace(n_layer=1, n_vocab=96)
    B, T = 1, 40
    spec = exec_spec(cfg.replace(backend="triton"), B, T, torch.float32, "cpu")
    ex = executed(cfg, B, T, spec)
    sc = count_step(cfg, B, T, counter="interpreter", backend="triton")
    assert sc.total == ex.matmul_total
    assert {g: sc.by_group[g] for g in GROUPS if g != "other"} == _matmul_groups(ex)
    assert sc.extra["kernel_dot_flops"] > 0
    assert {k["group"] for k in sc.by_kernel if not k["name"].startswith("torch ")} <= {
        "attention", "feedforward"}
    # against an independent count: the dispatcher's count of the torch reference on the same shape
    # (dense attention, PyTorch's own GEMM formulas) differs by exactly the tile overheads
    ref = count_step(cfg, B, T, counter="dispatch", backend="torch", device="cpu")
    gap = ex.matmul_total - executed(cfg, B, T).matmul_total
    assert gap != 0 and sc.total - ref.total == gap


def test_interpreter_errors_without_interpreter(monkeypatch):
    monkeypatch.setattr(sys.modules["sixn.bench.counters.interpreter"], "interpreting", lambda: False)
    with pytest.raises(CounterError, match="TRITON_INTERPRET=1"):
        count_step(get_preset("tiny"), 1, 8, counter="interpreter", backend="triton")


def test_interpreter_hook_point_missing(monkeypatch):
    from triton.runtime import interpreter as interp
    monkeypatch.delattr(interp, "GridExecutor")
    with pytest.raises(CounterError, match="no InterpreterBuilder.create_dot / GridExecutor"):
        with counters.interpreter._interpreter_hooks(counters.interpreter._DotTally(lambda: "Global")):
            pass


@pytest.mark.gpu
def test_dispatch_triton_on_cuda_minus_torch_reference_is_tile_overhead():
    """On CUDA: the dispatcher's count of the triton backend minus its count of the torch reference
    (PyTorch's own formulas, dense attention) is the analytic tile overhead of the CUDA tiles."""
    cfg = get_preset("tiny").replace(backend="triton")
    sc = count_step(cfg, 2, 64, counter="dispatch", device="cuda", dtype="bfloat16")
    ref = count_step(cfg, 2, 64, counter="dispatch", backend="torch", device="cuda", dtype="bfloat16")
    spec = exec_spec(cfg, 2, 64, torch.bfloat16, "cuda", backend="triton")
    assert sc.total - ref.total == executed(cfg, 2, 64, spec).matmul_total - executed(cfg, 2, 64).matmul_total