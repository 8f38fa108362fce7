"""Training runs: schedule, NaN guard, checkpoint/resume after a kill, B_simple, compute columns."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sixn.model.config import GPTConfig
from sixn.model.flops import flops_per_token, param_counts
from sixn.scaling import data
from sixn.scaling.noise import NoiseScale, two_batch_estimates
from sixn.scaling.train import (LOG_COLUMNS, TrainConfig, TrainingDiverged, append_row, lr_at,
                           read_csv_rows, save_checkpoint, load_checkpoint, train, write_csv_rows)

REPO = Path(__file__).resolve().parent.parent
CFG = GPTConfig.from_shape(1, 16, n_ctx=16, n_vocab=256, n_head=2)
TCFG = TrainConfig(steps=24, batch_size=8, seq_len=16, lr=1e-2, warmup=4, eval_interval=6,
                   eval_batches=2, noise_microbatches=4, noise_interval=2)
COMPARED = ("step", "tokens", "lr", "train_loss", "val_loss", "transfer_loss", "b_simple",
            "C_kaplan_6N", "C_full_model", "C_measured")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
    (root / "code.py").write_text(text)
    return data.load_corpus(root)


class Stop(Exception):
    pass


def _stop_after(k):
    def cb(step, model, opt):
        if step == k:
            raise Stop
    return cb


def _log(run_dir):
    return read_csv_rows(Path(run_dir) / "log.csv")[1]


def test_schedule_values():
    c = TrainConfig(steps=110, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(1e-4)
    assert lr_at(4, c) == pytest.approx(5e-4)
    assert lr_at(9, c) == pytest.approx(1e-3)
    assert lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(60, c) == pytest.approx((1e-3 + 1e-4) / 2)   # half-way down the cosine
    assert lr_at(85, c) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert lr_at(110, c) == pytest.approx(1e-4) and lr_at(500, c) == pytest.approx(1e-4)
    lrs = [lr_at(s, c) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_train_config_errors():
    with pytest.raises(ValueError, match="steps must be a positive int"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="divisible by noise_microbatches"):
        TrainConfig(batch_size=6, noise_microbatches=4)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="int8")


def test_run_logs_compute_and_noise(corpus, tmp_path):
    r = train(CFG, TCFG, corpus, tmp_path / "run")
    rows = r.rows
    assert [int(x["step"]) for x in rows] == [6, 12, 18, 24]
    header = read_csv_rows(tmp_path / "run" / "log.csv")[0]
    assert header[:len(LOG_COLUMNS)] == list(LOG_COLUMNS) and "git_commit" in header
    last = rows[-1]
    tokens = 24 * 8 * 16
    assert int(last["tokens"]) == tokens
    N = param_counts(CFG).nonembedding
    assert int(last["N"]) == N
    assert float(last["C_kaplan_6N"]) == pytest.approx(6 * N * tokens)
    for conv in ("kaplan_6N_context", "full_model"):
        assert float(last[f"C_{conv}"]) == pytest.approx(flops_per_token(CFG, conv, 16) * tokens)
    # measured: the dispatch counter's FLOPs of one step of this shape, times the steps
    from sixn.bench.counters import count_step
    per_step = count_step(CFG, 8, 16, counter="dispatch").total
    assert float(last["C_measured"]) == pytest.approx(24 * per_step)
    assert float(last["pf_days_measured"]) == pytest.approx(24 * per_step / 8.64e19)
    # loss falls, and B_simple is finite and positive
    assert float(last["val_loss"]) < float(rows[0]["val_loss"]) < math.log(256) + 0.5
    b = [float(x["b_simple"]) for x in rows if x["b_simple"]]
    assert b and all(math.isfinite(v) and v > 0 for v in b)
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert done["status"] == "done" and done["steps"] == 24 and done["D"] == tokens
    assert done["best_val_loss"] == pytest.approx(min(float(x["val_loss"]) for x in rows))
    assert done["corpus_fingerprint"] == corpus.fingerprint
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["corpus_fingerprint"] == corpus.fingerprint and "provenance" in cfg
    assert cfg["measured_step_flops"] == per_step


def test_resume_after_interrupt_equals_uninterrupted(corpus, tmp_path):
    full = train(CFG, TCFG, corpus, tmp_path / "full").rows
    with pytest.raises(Stop):
        train(CFG, TCFG, corpus, tmp_path / "cut", callback=_stop_after(15))
    assert [int(x["step"]) for x in _log(tmp_path / "cut")] == [6, 12]
    assert load_checkpoint(tmp_path / "cut" / "ckpt.pt")["step"] == 12
    # a kill between the log append and the checkpoint leaves a row past the checkpoint: dropped
    append_row(tmp_path / "cut" / "log.csv", {**_log(tmp_path / "cut")[-1], "step": 18, "val_loss": 9.9},
               {k: "x" for k in ("device", "driver", "torch", "triton", "python", "git_commit",
                                 "command", "date")})
    resumed = train(CFG, TCFG, corpus, tmp_path / "cut").rows
    assert len(resumed) == len(full)
    for a, b in zip(full, resumed):
        for k in COMPARED:
            assert a[k] == b[k], (k, a["step"], a[k], b[k])


def test_resume_after_sigkill(corpus, tmp_path):
    """A real kill (SIGKILL mid-run, between two evaluations): at most one interval is lost."""
    root = Path(corpus.files[0]).parent
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        torch.set_num_threads(1)
        from tests.test_train import CFG, TCFG
        from sixn.scaling import data
        from sixn.scaling.train import train
        c = data.load_corpus({str(root)!r})
        def cb(step, model, opt):
            if step == 16:
                os.kill(os.getpid(), signal.SIGKILL)
        train(CFG, TCFG, c, {str(tmp_path / 'killed')!r}, callback=cb)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == -9, p.stderr
    rows = _log(tmp_path / "killed")
    assert [int(x["step"]) for x in rows] == [6, 12]  # lost steps 13-16: less than one interval
    assert not (tmp_path / "killed" / "done.json").exists()
    assert not [f for f in os.listdir(tmp_path / "killed") if f.endswith(".tmp")]
    resumed = train(CFG, TCFG, corpus, tmp_path / "killed").rows
    full = train(CFG, TCFG, corpus, tmp_path / "full").rows
    assert [x["val_loss"] for x in resumed] == [x["val_loss"] for x in full]


def test_nan_guard_keeps_data(corpus, tmp_path):
    def poison(step, model, opt):
        if step == 14:
            with torch.no_grad():
                model.wte.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="diverged at step 15: the loss is nan") as e:
        train(CFG, TCFG, corpus, tmp_path / "nan", callback=poison)
    assert e.value.step == 15 and math.isnan(e.value.loss)
    assert [int(x["step"]) for x in _log(tmp_path / "nan")] == [6, 12]
    assert load_checkpoint(tmp_path / "nan" / "ckpt.pt")["step"] == 12
    info = json.loads((tmp_path / "nan" / "diverged.json").read_text())
    assert info["step"] == 15 and "lower the learning rate" in info["message"].lower()
    assert not (tmp_path / "nan" / "done.json").exists()


def test_resume_refuses_other_config(corpus, tmp_path):
    with pytest.raises(Stop):
        train(CFG, TCFG, corpus, tmp_path / "r", callback=_stop_after(7))
    with pytest.raises(ValueError, match="different train"):
        train(CFG, TCFG.replace(lr=5e-3), corpus, tmp_path / "r")


def test_atomic_writes_leave_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"step": 2, "bad": lambda: 0})  # unpicklable: the writer raises
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]
    log = tmp_path / "log.csv"
    write_csv_rows(log, ["a"], [{"a": 1}])
    before = log.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_csv_rows(log, ["a"], [{"a": 1}, {"a": 2}])
    assert log.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "log.csv"]


def test_two_batch_estimator_recovers_known_noise():
    # gradients g_i = G + noise / sqrt(B): |G|^2 = 4, tr(Sigma) = 64 -> B_simple = 16
    gen = torch.Generator().manual_seed(0)
    G = torch.zeros(64)
    G[0] = 2.0
    ns = NoiseScale(decay=0.99)
    for _ in range(400):
        small = [G + torch.randn(64, generator=gen) / math.sqrt(2) for _ in range(4)]  # B_small = 2
        big = torch.stack(small).mean(0)                                             # B_big = 8
        ns.update(float(torch.stack([s.dot(s) for s in small]).mean()), float(big.dot(big)), 2, 8)
    assert ns.b_simple == pytest.approx(16, rel=0.25)
    g2, s = two_batch_estimates(5.0, 4.5, 1, 2)
    assert (g2, s) == (pytest.approx(4.0), pytest.approx(1.0))
    with pytest.raises(ValueError):
        two_batch_estimates(1.0, 1.0, 4, 2)


@pytest.mark.gpu
def test_gpu_bf16_run_and_resume(corpus, tmp_path):
    """On a GPU: bf16 autocast, the GPU ladder's backend (triton), measured FLOPs, resume after a
    stop."""
    backend = "triton"
    t = TCFG.replace(device="cuda", dtype="bfloat16", backend=backend)
    cfg = GPTConfig.from_shape(2, 64, n_ctx=16, n_vocab=256, n_head=4)
    full = train(cfg, t, corpus, tmp_path / "full").rows
    assert all(math.isfinite(float(r["val_loss"])) for r in full)
    assert float(full[-1]["val_loss"]) < float(full[0]["val_loss"])
    if backend == "triton":
        assert float(full[-1]["C_measured"]) > 0
    with pytest.raises(Stop):
        train(cfg, t, corpus, tmp_path / "cut", callback=_stop_after(15))
    resumed = train(cfg, t, corpus, tmp_path / "cut").rows
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):  # GPU kernels need not be bitwise deterministic
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=2e-2)
