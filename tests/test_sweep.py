"""Sweeps: plans, the curves.csv / summary.csv schema, skipping finished runs, resuming, the CLI,
and the experiment analyses (sample efficiency, transfer offset, shape spread)."""

import json
import math
from pathlib import Path

import pytest

from sixn.bench.cli import main
from sixn.bench.results import read_csv_rows, read_rows
from sixn.model.flops import param_counts
from sixn.scaling import experiments as ex
from sixn.scaling import launch
from sixn.scaling import sweep as sw
from sixn.scaling.train import TrainConfig

CURVE_COLUMNS = (
    "run", "kind", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "n_vocab", "N", "N_total",
    "batch_size", "batch_tokens", "step", "tokens", "lr", "train_loss", "val_loss", "transfer_loss",
    "b_simple", "elapsed_s", "C_kaplan_6N", "C_kaplan_6N_context", "C_full_model", "C_measured",
    "pf_days_kaplan_6N", "pf_days_kaplan_6N_context", "pf_days_full_model", "pf_days_measured",
    "device", "torch", "git_commit", "date")
SUMMARY_COLUMNS = ("run", "kind", "N", "N_total", "n_layer", "d_model", "D", "steps", "val_loss",
                   "best_val_loss", "transfer_loss", "C_kaplan_6N", "C_kaplan_6N_context",
                   "C_full_model", "C_measured", "b_simple", "corpus_fingerprint")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    code = "".join(f"def g{i}(a, b):\n    return a * {i} - b // {i % 5 + 1}\n\n" for i in range(300))
    (root / "code").mkdir()
    (root / "code" / "m.py").write_text(code)
    prose = "".join(f"The {w} section explains how the value is computed and returned.\n"
                    for w in ("first", "second", "third", "fourth") * 60)
    (root / "prose.txt").write_text(prose)
    return root


def _plan(texts, transfer=True) -> sw.SweepPlan:
    t = TrainConfig(steps=8, batch_size=8, seq_len=16, lr=1e-2, warmup=2, eval_interval=4,
                    eval_batches=2, noise_interval=2)
    runs = [sw.RunSpec("ladder", sw._model(2, 16, None, 16, "torch"), t),
            sw.RunSpec("ladder", sw._model(2, 32, None, 16, "torch"), t),
            sw.RunSpec("data", sw._model(2, 16, None, 16, "torch"),
                       t.replace(data_tokens=400, early_stop=1)),
            sw.RunSpec("shape", sw._model(1, 24, 3, 16, "torch"), t)]
    return sw.SweepPlan(runs, name="test", corpus=[str(texts / "code")], transfer=transfer,
                        transfer_corpus=[str(texts / "prose.txt")])


def _header(path: Path) -> list[str]:
    return read_csv_rows(path)[0]


def test_default_plans():
    cpu = sw.build_plan("cpu")
    lad = [r for r in cpu.runs if r.kind == "ladder"]
    Ns = [param_counts(r.model).nonembedding for r in lad]
    assert len(lad) >= 7 and Ns == sorted(Ns) and len(set(Ns)) == len(Ns)
    assert math.log10(max(Ns) / min(Ns)) >= 2            # at least two decades of N
    assert len({r.name for r in cpu.runs}) == len(cpu.runs)
    assert all(r.model.n_layer >= 2 for r in lad)  # one-layer models stay out of the fits
    lrs = [r.train.lr for r in lad]
    assert lrs == sorted(lrs, reverse=True)
    gpu = sw.build_plan("gpu")
    gN = [param_counts(r.model).nonembedding for r in gpu.runs]
    assert len(gpu.runs) >= 8 and math.log10(max(gN) / min(gN)) >= 2.5
    assert all(r.train.dtype == "bfloat16" and r.train.device == "cuda" for r in gpu.runs)
    full = sw.build_plan("cpu", data_limited=True, shape=True, transfer=True)
    kinds = [r.kind for r in full.runs]
    assert kinds.count("data") >= 4 and kinds.count("shape") >= 5 and full.transfer
    shapes = [param_counts(r.model).nonembedding for r in full.runs if r.kind == "shape"]
    assert max(shapes) / min(shapes) < 1.25  # the shape experiment holds N nearly fixed
    with pytest.raises(ValueError, match="unknown size"):
        sw.build_plan("cpu", sizes=["big"])
    assert sw.parse_size("2x64x4") == (2, 64, 4)
    assert sw.parse_size("ladder-98k") == (2, 64, 1)


def test_sweep_tables_skip_and_resume(texts, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    plan = _plan(texts)
    d = launch.run_sweep(plan, out, "cpu", progress=False, fit=False)
    assert d == out
    header = _header(out / "curves.csv")
    assert all(c in header for c in CURVE_COLUMNS), set(CURVE_COLUMNS) - set(header)
    curves = read_rows(out / "curves.csv")
    assert {r["kind"] for r in curves} == {"ladder", "data", "shape"}
    assert all(r["transfer_loss"] is not None and r["C_measured"] > 0 for r in curves)
    summary = read_rows(out / "summary.csv")
    assert all(c in _header(out / "summary.csv") for c in SUMMARY_COLUMNS)
    assert len(summary) == 4
    assert [s for s in summary if s["kind"] == "data"][0]["data_tokens"] == 400
    exp = json.loads((out / "experiments.json").read_text())
    assert set(exp) >= {"sample_efficiency", "transfer", "shape", "provenance"}
    # every run has its files
    corpus, tr = sw.load_plan_corpora(plan)
    for r in sw.resolve_plan(plan, 256, "cpu", sw.data_identity(corpus, tr)):
        rd = out / "runs" / r.name
        assert all((rd / f).exists() for f in ("config.json", "log.csv", "ckpt.pt", "done.json"))

    # as if the last run were killed after its final checkpoint: no done.json
    runs = sw.resolve_plan(plan, 256, "cpu", sw.data_identity(corpus, tr))
    last = out / "runs" / runs[-1].name
    (last / "done.json").unlink()
    calls = []
    real_train = sw.train

    def counting_train(*a, **k):
        calls.append(k["name"])
        return real_train(*a, **k)
    monkeypatch.setattr(sw, "train", counting_train)
    before = (out / "runs" / runs[0].name / "log.csv").read_text()
    launch.run_sweep(plan, out, "cpu", progress=False, fit=False)
    assert calls == [runs[-1].name]          # finished runs skipped, the unfinished one resumed
    assert (out / "runs" / runs[0].name / "log.csv").read_text() == before
    assert (last / "done.json").exists()
    assert len(read_rows(out / "curves.csv")) == len(curves)
    calls.clear()
    launch.run_sweep(plan, out, "cpu", progress=False, fit=False)
    assert calls == []
    # without the transfer corpus the runs are other runs (other names): all trained again
    launch.run_sweep(_plan(texts, transfer=False), out, "cpu", progress=False, fit=False)
    assert len(calls) == 4 and not set(calls) & {r.name for r in runs}


def test_cli_scale_json(texts, tmp_path, capsys):
    rc = main(["scale", "--sizes", "2x16", "2x32", "--steps", "4", "--corpus", str(texts / "code"),
               "--out", str(tmp_path / "s"), "--no-fit", "--no-progress", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in res["runs"]] == ["done", "done"]
    assert res["runs"][0]["N"] < res["runs"][1]["N"]
    assert (tmp_path / "s" / "curves.csv").exists()
    assert main(["scale", "--steps", "0"]) == 2
    assert main(["scale", "--sizes", "huge"]) == 2
    assert main(["scale", "--corpus", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["scale", "--status", "--out", str(tmp_path / "nothing")]) == 2


def _curve(run, N, losses, tokens, kind="ladder", transfer=None):
    return [{"run": run, "kind": kind, "N": N, "step": i + 1, "tokens": t, "val_loss": L,
             "transfer_loss": None if transfer is None else L + transfer}
            for i, (L, t) in enumerate(zip(losses, tokens))]


def test_tokens_to_reach_interpolates():
    rows = _curve("a", 1, [3.0, 2.0, 1.5], [100, 1000, 10000])
    assert ex.tokens_to_reach(rows, 3.0) == 100
    assert ex.tokens_to_reach(rows, 2.5) == pytest.approx(math.sqrt(100 * 1000))
    assert ex.tokens_to_reach(rows, 1.0) is None


def test_sample_efficiency_and_transfer_offsets():
    t = [1e3, 1e4, 1e5, 1e6]
    curves = (_curve("small", 1e3, [3.0, 2.6, 2.3, 2.1], t, transfer=0.5)
              + _curve("big", 1e5, [2.8, 2.2, 1.9, 1.7], t, transfer=0.5))
    se = ex.sample_efficiency(curves)
    assert se["larger_first_fraction"] == 1.0 and se["n_pairs"] == 2
    assert se["runs"][1]["tokens"][0] < se["runs"][0]["tokens"][0]
    slow = (_curve("small", 1e3, [3.0, 2.6, 2.3, 2.1], t)
            + _curve("big", 1e5, [3.2, 2.9, 2.5, 2.2], t))
    assert ex.sample_efficiency(slow)["larger_first_fraction"] == 0.0
    assert se["targets"][0] == pytest.approx(2.1)   # the worst final loss: every run reaches it
    tr = ex.transfer_offsets(curves)
    assert tr["slope"] == pytest.approx(1.0) and tr["intercept"] == pytest.approx(0.5)
    assert all(abs(r["offset_drift"]) < 1e-12 for r in tr["runs"])
    worse = (_curve("small", 1e3, [3.0, 2.6], t[:2], transfer=0.2)
             + [dict(r, transfer_loss=r["val_loss"] * 2) for r in _curve("big", 1e5, [2.8, 2.2], t[:2])])
    assert ex.transfer_offsets(worse)["slope"] != pytest.approx(1.0)
    assert ex.transfer_offsets(_curve("x", 1, [2.0], [5]))["runs"] == []


def test_shape_spread():
    summary = [{"run": f"s{L}", "kind": "shape", "n_layer": L, "d_model": d, "n_head": 4, "N": 12 * L * d * d,
                "best_val_loss": loss} for L, d, loss in ((1, 96, 2.2), (2, 64, 2.0), (4, 48, 2.05))]
    summary += [{"run": "l1", "kind": "ladder", "N": 1e4, "best_val_loss": 2.4},
                {"run": "l2", "kind": "ladder", "N": 1e5, "best_val_loss": 2.0}]
    sh = ex.shape_spread(summary)
    assert sh["spread"] == pytest.approx(0.1)
    assert sh["ladder_slope"] == pytest.approx(math.log(2.0 / 2.4) / math.log(10))
    assert [r["aspect_ratio"] for r in sh["runs"]] == [96, 32, 12]
    assert sh["adjusted_spread"] is not None and sh["adjusted_spread"] != sh["spread"]
