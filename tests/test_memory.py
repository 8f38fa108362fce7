"""model.memory: the training-step memory estimate against a measured peak, the check before
allocating, and how sixn bench uses it (an explicit batch that does not fit is exit 2 with the
largest batch that fits; a default batch is lowered; every row failing is exit 1)."""

import multiprocessing
from pathlib import Path

import pytest
import torch

from sixn.bench.cli import main
from sixn.model import memory
from sixn.model.config import GPTConfig
from sixn.model.flops import param_counts
from sixn.model.gpt import GPT
from sixn.model.presets import get_preset

from memory_probe import _peak_growth  # a module of its own: a spawned child imports it by name


def _measured_peak(shape) -> int:
    # a fresh interpreter: a forked child would reuse the parent's freed heap and under-report growth
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_growth, args=(shape, q))
    p.start()
    peak = q.get(timeout=120)
    p.join(timeout=60)
    return peak


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("shape", [(2, 64, 64, 256, 32, "torch"), (2, 128, 128, 4096, 4, "sdpa")])
def test_estimate_bounds_the_measured_peak(shape):
    """The estimate bounds the measured peak, and its activations grow with the batch as the
    measured peak does (within 1.6x: an upper bound with little waste)."""
    L, d, T, V, B, backend = shape
    cfg = GPTConfig.from_shape(L, d, n_ctx=T, n_vocab=V, backend=backend)
    # the first model and optimizer built in a process import more of torch: not in the children
    torch.optim.AdamW(GPT(cfg).parameters())
    small, big = _measured_peak(shape), _measured_peak((L, d, T, V, 4 * B, backend))
    est_small, est_big = memory.training_memory(cfg, B, T), memory.training_memory(cfg, 4 * B, T)
    assert small <= est_small.total and big <= est_big.total, (small, big, est_big.describe())
    slope, est_slope = big - small, est_big.activations - est_small.activations
    assert slope <= est_slope <= 1.6 * slope, (slope, est_slope)


def test_estimate_parts_and_largest_batch():
    cfg = get_preset("tiny")
    est = memory.training_memory(cfg, 8, 64)
    P = param_counts(cfg).total
    assert est.parameters == est.gradients == 4 * P and est.optimizer == 12 * P
    assert est.activations == 8 * est.per_sequence
    assert memory.training_memory(cfg, 16, 64).activations == 2 * est.activations
    # the dense reference keeps the B x H x T x T scores; the fused kernels do not
    assert memory.training_memory(cfg.replace(backend="sdpa"), 8, 64).activations < est.activations
    free = 10 ** 9
    k = est.largest_batch(free)
    assert memory.training_memory(cfg, k, 64).total <= memory.HEADROOM * free
    assert memory.training_memory(cfg, k + 1, 64).total > memory.HEADROOM * free


def test_check_names_the_largest_batch_or_refuses_the_model():
    cfg = get_preset("tiny")
    with pytest.raises(memory.InsufficientMemory, match=r"the largest batch that fits is \d+") as e:
        memory.check_training_memory(cfg, 10 ** 6, 64, "cpu", free=2 * 10 ** 9)
    assert e.value.largest_batch == e.value.estimate.largest_batch(2 * 10 ** 9) >= 1
    big = GPTConfig.from_shape(48, 4096, n_ctx=64, n_vocab=256)
    with pytest.raises(memory.InsufficientMemory, match="does not fit even at batch 1"):
        memory.check_training_memory(big, 1, 64, "cpu", free=64 * 10 ** 9)
    assert memory.check_training_memory(cfg, 4, 64, "meta").total > 0   # meta: nothing to check


def test_free_memory_from_meminfo(tmp_path):
    p = tmp_path / "meminfo"
    p.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert memory._meminfo_available(p) == 8000000 * 1024
    p.write_text("garbage")
    assert memory._meminfo_available(p) is None


def test_bench_batch_too_large_exits_2_before_allocating(capsys):
    rc = main(["bench", "--device", "cpu", "--preset", "tiny", "--batch", "100000000", "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "largest batch that fits is" in err and "activations" in err


def test_bench_default_batch_lowered_to_what_fits(monkeypatch, one_thread):
    from sixn.bench import step
    cfg = get_preset("tiny")
    free = int(memory.training_memory(cfg, 2, 32).total / memory.HEADROOM) + 1
    monkeypatch.setattr(memory, "free_memory", lambda device: free)
    monkeypatch.setattr(step, "CPU_BATCH", 64)
    msgs = []
    rows = step.run_bench(["tiny"], ["torch"], "cpu", steps=1, warmup=0, seq_len=32,
                          progress=msgs.append)
    assert rows[0]["error"] is None and rows[0]["batch"] == 2
    assert any("would not fit the free memory, trying 2" in m for m in msgs)


def test_bench_exits_1_when_every_row_failed(monkeypatch, capsys, tmp_path):
    from sixn.bench import step

    def boom(*a, **k):
        raise RuntimeError("no step today")
    monkeypatch.setattr(step, "_measure_one", boom)
    monkeypatch.setattr("sixn.bench.commands.bench.measure_roofs", _fake_roofs)
    rc = main(["bench", "--device", "cpu", "--preset", "tiny", "--no-plots", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and "every training-step row failed (2 of 2)" in err and "no step today" in err


def _fake_roofs(dev):
    from sixn.bench.roofs import GemmRoof, Roofs
    return Roofs("cpu", "float32", (GemmRoof(64, 64, 64, "float32", 1.0, 0.9, 1.1, 524288, 49152, 5e-4),),
                 2 ** 20, 1.0, 0.9, 1.1)


def test_scale_refuses_a_run_that_cannot_fit_before_training_any(capsys, tmp_path):
    rc = main(["scale", "--sizes", "2x16", "48x4096", "--out", str(tmp_path / "sw"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "n_layer 48 x d_model 4096" in err and "does not fit even at batch 1" in err
    assert not (tmp_path / "sw").exists()   # nothing trained, nothing written


def test_counter_step_memory_checked_on_real_devices(capsys):
    rc = main(["flops", "--n-layer", "24", "--d-model", "8192", "--measure", "dispatch",
               "--device", "cpu"])
    assert rc == 2 and "does not fit even at batch 1" in capsys.readouterr().err
