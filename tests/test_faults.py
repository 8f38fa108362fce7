"""Fault injection: what a kill, a torn append or damage from outside leaves in a run folder, and what
sixn makes of it. A torn last log line is dropped with a notice and the resumed run equals an
uninterrupted one; any other damage is a CorruptFile naming the file and --repair, and --repair
trains the run again to the same result; a kill at any write leaves every file whole."""

import csv
import math
import io
import os
from pathlib import Path

import pytest
import torch

from sixn.bench.errors import CorruptFile
from sixn.bench.results import clean_stale_temps, read_csv_rows
from sixn.model.config import GPTConfig
from sixn.scaling import data, runstate
from sixn.scaling.train import TrainConfig, TrainingDiverged, train

CFG = GPTConfig.from_shape(1, 16, n_ctx=16, n_vocab=256, n_head=2)
TCFG = TrainConfig(steps=24, batch_size=8, seq_len=16, lr=1e-2, warmup=4, eval_interval=6,
                   eval_batches=2, noise_microbatches=0)
COMPARED = ("step", "tokens", "lr", "train_loss", "val_loss", "C_kaplan_6N")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
    (root / "code.py").write_text(text)
    return data.load_corpus(root)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run every damaged-and-recovered run must equal, row for row."""
    rd = tmp_path_factory.mktemp("ref") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # as every test here (one_thread): the same arithmetic
    try:
        train(CFG, TCFG, corpus, rd, measured_step_flops=None)
    finally:
        torch.set_num_threads(n)
    return _rows(rd)


class Kill(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException: no `except Exception` stops it)."""


def _stop_after(k):
    def cb(step, model, opt):
        if step == k:
            raise Kill
    return cb


def _rows(rd):
    return [{k: r[k] for k in COMPARED} for r in read_csv_rows(Path(rd) / "log.csv")[1]]


def _partial(corpus, rd, at=14):
    """A run killed at step `at`: log rows at 6 and 12, the checkpoint of step 12."""
    with pytest.raises(Kill):
        train(CFG, TCFG, corpus, rd, measured_step_flops=None, callback=_stop_after(at))
    return rd


def _resume(corpus, rd, **kw):
    return train(CFG, TCFG, corpus, rd, measured_step_flops=None, **kw)


# --- torn and truncated logs -----------------------------------------------------------------

def test_torn_last_line_is_dropped_with_a_notice(corpus, reference, tmp_path, capsys):
    rd = _partial(corpus, tmp_path / "r", at=20)   # rows 6, 12, 18; checkpoint 18
    log = rd / "log.csv"
    text = log.read_text()
    last = text.splitlines(keepends=True)[-1]
    log.write_text(text + last[: len(last) // 2])  # an append cut off by a kill
    _resume(corpus, rd)
    assert "dropped a torn last line" in capsys.readouterr().err
    assert _rows(rd) == reference


def test_torn_row_with_its_newline_but_missing_fields_is_dropped(corpus, reference, tmp_path, capsys):
    rd = _partial(corpus, tmp_path / "r", at=20)
    log = rd / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + ",".join(lines[-1].split(",")[:5]) + "\n")
    # the checkpoint is at 18 and the row of step 18 is gone: that is damage, not a torn append
    with pytest.raises(CorruptFile, match=r"log\.csv: the checkpoint \(ckpt\.pt\) says the run "
                                          r"reached step 18, but the evaluations at step\(s\) 18"):
        _resume(corpus, rd)
    assert "dropped a torn last line" in capsys.readouterr().err


@pytest.mark.parametrize("cut", ["header", "rows"])
def test_truncated_log_is_a_clear_error_and_repair_retrains(corpus, reference, tmp_path, cut, capsys):
    rd = _partial(corpus, tmp_path / "r")
    log = rd / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0][:50] if cut == "header" else "".join(lines[:2]))
    with pytest.raises(CorruptFile) as e:
        _resume(corpus, rd)
    msg = str(e.value)
    assert str(log) in msg and "--repair" in msg and "missing" in msg
    _resume(corpus, rd, repair=True)
    assert _rows(rd) == reference
    aside = [p for p in rd.iterdir() if p.name.startswith("corrupt-")]
    assert len(aside) == 1 and (aside[0] / "log.csv").exists() and (aside[0] / "reason.txt").exists()
    assert "--repair: moved" in capsys.readouterr().err


def _set_cell(text: str, line: int, column: str, value: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    rows[line - 1][rows[0].index(column)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b.replace(b"\n", b"\n\xff\xfe", 1), "not UTF-8 text"),
    (lambda b: b + b.splitlines(keepends=True)[-1], "repeated or out of order"),
    (lambda b: _set_cell(b.decode(), 3, "val_loss", "abc").encode(), "line 3: val_loss 'abc'"),
    (lambda b: _set_cell(b.decode(), 2, "step", "-6").encode(), "line 2: step"),
    (lambda b: b"a,b\n1,2\n", "lacks the column"),
    (lambda b: b.replace(b"\n", b",x,y,z\n", 2).replace(b",x,y,z\n", b"\n", 1),
     "not a readable CSV table"),
])
def test_other_log_damage_names_the_file(corpus, tmp_path, damage, match):
    rd = _partial(corpus, tmp_path / "r", at=20)
    log = rd / "log.csv"
    log.write_bytes(damage(log.read_bytes()))
    with pytest.raises(CorruptFile, match=match) as e:
        _resume(corpus, rd)
    assert str(log) in str(e.value) and "--repair" in str(e.value)


def test_duplicated_rows_from_two_trainers_are_refused(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("run,step,tokens,val_loss\nr,6,48,5.0\nr,12,96,4.0\nr,6,48,5.0\nr,12,96,4.0\n")
    with pytest.raises(CorruptFile, match="step 6 after step 12: the rows are repeated"):
        runstate.read_log(log)


# --- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_format_loads_weights_only(corpus, tmp_path):
    rd = _partial(corpus, tmp_path / "r")
    ck = torch.load(rd / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ck["step"] == 12 and set(runstate.CKPT_ENTRIES) <= set(ck)


class _Foreign:
    pass


@pytest.mark.parametrize("damage, match", [
    ("garbage", "the checkpoint cannot be read"),
    ("truncate", "cannot be read"),
    ("foreign", "weights-only load refuses"),
    ("no_step", "has no 'step' entry"),
    ("step_out_of_range", "outside the run's schedule"),
    ("other_model", "the checkpoint's model does not fit this run"),
])
def test_corrupt_checkpoint_is_a_clear_error_and_repair_retrains(corpus, reference, tmp_path,
                                                                  damage, match):
    rd = _partial(corpus, tmp_path / "r")
    ck_path = rd / "ckpt.pt"
    if damage == "garbage":
        ck_path.write_bytes(bytes(range(256)) * 16)   # (fixed bytes: the same error each time)
    elif damage == "truncate":
        ck_path.write_bytes(ck_path.read_bytes()[:1000])
    elif damage == "foreign":   # a pickle of an arbitrary class: refused, never executed
        torch.save({"model": _Foreign()}, ck_path)
    else:
        ck = torch.load(ck_path, weights_only=True)
        if damage == "no_step":
            del ck["step"]
        elif damage == "step_out_of_range":
            ck["step"] = 10 ** 6
        else:
            ck["model"] = {k: torch.zeros(3) for k in ck["model"]}
        torch.save(ck, ck_path)
    with pytest.raises(CorruptFile, match=match) as e:
        _resume(corpus, rd)
    msg = str(e.value)
    assert str(ck_path) in msg and "--repair" in msg and "weights_only=False" not in msg
    _resume(corpus, rd, repair=True)
    assert _rows(rd) == reference


def test_corrupt_config_json(corpus, reference, tmp_path):
    rd = _partial(corpus, tmp_path / "r")
    (rd / "config.json").write_text('{"run": "r", "kind": ')
    with pytest.raises(CorruptFile, match=r"config\.json: the run's configuration is not valid JSON"):
        _resume(corpus, rd)
    (rd / "config.json").write_text('{"run": "r", "kind": "ladder", "model": [], "train": {}}')
    with pytest.raises(CorruptFile, match=r"'model' should be dict"):
        _resume(corpus, rd)
    _resume(corpus, rd, repair=True)
    assert _rows(rd) == reference


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("[1, 2]", "not a JSON object"),
    ('{"run": "r", "steps": 24, "D": 1, "val_loss": 3.0, "status": "maybe"}', "status 'maybe'"),
    ('{"run": "r", "steps": "24", "D": 1, "val_loss": 3.0, "status": "done"}', "'steps' should be int"),
])
def test_corrupt_done_json(tmp_path, text, match):
    (tmp_path / "done.json").write_text(text)
    with pytest.raises(CorruptFile, match=match):
        runstate.finished_state(tmp_path, 6, 24)


def test_finished_log_cut_short_is_refused(corpus, tmp_path):
    rd = tmp_path / "r"
    _resume(corpus, rd)
    lines = (rd / "log.csv").read_text().splitlines(keepends=True)
    assert runstate.finished_state(rd, TCFG.eval_interval, TCFG.total_steps) == "done"
    (rd / "log.csv").write_text("".join(lines[:3]))   # a shortened finished log: rows 6, 12
    with pytest.raises(CorruptFile, match=r"done\.json says the run reached step 24, but the "
                                          r"evaluations at step\(s\) 18, 24 are missing"):
        runstate.finished_state(rd, TCFG.eval_interval, TCFG.total_steps)


# --- a kill at each write --------------------------------------------------------------------

def _snapshot(rd: Path) -> dict[str, bytes]:
    """The run's files (not the temporary file of the write in flight)."""
    return {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file() and p.suffix != ".tmp"}


def test_a_kill_at_each_replace_leaves_every_file_whole(corpus, reference, tmp_path, monkeypatch):
    """Every atomic write of a run (config.json, each checkpoint, done.json) is cut off in turn at
    its rename: the files that existed are unchanged, none is missing or torn, no temporary file
    is left, and the resumed run equals the uninterrupted one."""
    real = os.replace
    k = 0
    while True:
        rd = tmp_path / f"r{k}"
        calls = {"n": 0}
        before: dict[str, bytes] = {}

        def replace(src, dst, _k=k, _calls=calls, _rd=rd, _before=before):
            if _calls["n"] == _k:
                _before.update(_snapshot(_rd))
                raise Kill
            _calls["n"] += 1
            return real(src, dst)
        monkeypatch.setattr(os, "replace", replace)
        try:
            _resume(corpus, rd)
            killed = False
        except Kill:
            killed = True
        monkeypatch.setattr(os, "replace", real)
        if not killed:
            break
        after = _snapshot(rd)
        assert after == before, f"write {k}: files changed or went missing"
        assert not [p for p in rd.iterdir() if p.name.endswith(".tmp")]
        _resume(corpus, rd)
        assert _rows(rd) == reference, f"resumed after a kill at write {k}"
        k += 1
    assert k >= 6   # config.json, four checkpoints, done.json


def test_a_kill_inside_an_append_is_a_torn_line(corpus, reference, tmp_path, monkeypatch, capsys):
    """append_csv's one write cut off halfway (what SIGKILL can leave): the resumed run drops the
    torn line with a notice and equals the uninterrupted run."""
    from sixn.bench import results
    real = results.append_csv
    n = {"calls": 0}

    def torn_append(path, rows, prov=None):
        n["calls"] += 1
        if n["calls"] == 3:
            before = Path(path).read_bytes()
            real(path, rows, prov)
            whole = Path(path).read_bytes()
            Path(path).write_bytes(whole[: len(before) + (len(whole) - len(before)) // 2])
            raise Kill
        return real(path, rows, prov)
    monkeypatch.setattr("sixn.scaling.train.append_csv", torn_append)
    rd = tmp_path / "r"
    with pytest.raises(Kill):
        _resume(corpus, rd)
    monkeypatch.setattr("sixn.scaling.train.append_csv", real)
    _resume(corpus, rd)
    assert "dropped a torn last line" in capsys.readouterr().err
    assert _rows(rd) == reference


def test_stale_temporary_files_are_cleaned(corpus, tmp_path):
    rd = _partial(corpus, tmp_path / "r")
    old, fresh = rd / ".ckpt.pt.abc123.tmp", rd / ".log.csv.def456.tmp"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (0, 0))
    _resume(corpus, rd)
    assert not old.exists() and fresh.exists()   # a live writer's temporary file is left alone
    assert clean_stale_temps(rd, max_age_s=-1) == [fresh]


# --- divergence ------------------------------------------------------------------------------

def test_a_run_worse_than_the_uniform_guess_is_diverged_not_done(corpus, tmp_path, monkeypatch):
    from sixn.scaling import train as T
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: 2426.0)
    rd = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match=r"worse than a uniform guess over the 256 tokens"):
        _resume(corpus, rd)
    assert not (rd / "done.json").exists()
    d = runstate.read_diverged(rd / "diverged.json")
    assert d["reason"] == "worse_than_uniform" and d["loss"] == 2426.0
    assert runstate.finished_state(rd, 6, 24) == "diverged"


# --- the report ------------------------------------------------------------------------------

def test_report_marks_a_failed_stage_stale(tmp_path):
    from sixn.bench.report_md import write_report
    from sixn.bench.results import provenance, write_csv, write_json
    folder = tmp_path / "rep"
    write_csv(folder / "scaling" / "summary.csv", [
        {"run": "a", "kind": "ladder", "N": 6144, "D": 10 ** 5, "val_loss": 3.1, "C_kaplan_6N": 1e12,
         "C_measured": 2e12}])
    stages = {"flops": {"status": "done", "date": "2026-01-01T00:00:00Z"},
              "scaling": {"status": "failed", "date": "2026-01-02T00:00:00Z",
                          "error": "CorruptFile: ckpt.pt: the checkpoint cannot be read"}}
    write_json(folder / "stages.json", {"plan": {"device": "cpu"}, "stages": stages})
    text = write_report(folder, {"device": "cpu", "quick": True}, provenance("cpu"),
                        ("flops", "scaling")).read_text()
    scaling = text[text.index("## Scaling laws"):]
    assert scaling.splitlines()[2].startswith("> **Stale:** the scaling stage failed in the run of "
                                              "2026-01-02T00:00:00Z (CorruptFile: ckpt.pt")
    assert "| a | ladder |" in scaling   # the old table is still shown, under the warning
    stages["scaling"]["status"] = "done"
    write_json(folder / "stages.json", {"plan": {"device": "cpu"}, "stages": stages})
    text = write_report(folder, {"device": "cpu", "quick": True}, provenance("cpu"),
                        ("flops", "scaling")).read_text()
    assert "Stale:" not in text


@pytest.mark.parametrize("text", ["{\"stages\": ", "[]", '{"stages": {"flops": "done"}}', ""])
def test_corrupt_stages_json_is_one_line_and_restart_recovers(tmp_path, capsys, text):
    from sixn.bench.cli import main
    folder = tmp_path / "rep"
    folder.mkdir()
    (folder / "stages.json").write_text(text)
    rc = main(["report", "--stages", "flops", "--out", str(folder)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "stages.json" in err and "--restart" in err
    assert main(["report", "--stages", "flops", "--restart", "--out", str(folder)]) == 0
    assert "the record starts afresh" in capsys.readouterr().err
    assert (folder / "stages.json.corrupt").read_text() == text


# --- sixn scale on a damaged sweep folder ---------------------------------------------------

@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    code = "".join(f"def g{i}(a, b):\n    return a * {i} - b // {i % 5 + 1}\n\n" for i in range(300))
    (root / "m.py").write_text(code)
    return root


def _scale(texts, out, *extra):
    from sixn.bench.cli import main
    return main(["scale", "--quick", "--sizes", "2x16", "2x24", "--steps", "24", "--corpus",
                 str(texts), "--out", str(out), "--workers", "1", "--no-fit", "--no-progress",
                 *extra])


@pytest.fixture(scope="module")
def finished_sweep(texts, tmp_path_factory):
    """A finished two-run sweep (one thread, as in every test here) and its curves."""
    out = tmp_path_factory.mktemp("sweep") / "sw"
    n = torch.get_num_threads()
    try:
        assert _scale(texts, out) == 0
    finally:
        torch.set_num_threads(n)
    return out, _sweep_curves(out)


def _sweep_curves(out):
    rows = read_csv_rows(out / "curves.csv")[1]
    keys = [(r["run"], int(r["step"])) for r in rows]
    assert len(keys) == len(set(keys)), "an evaluation appears twice in curves.csv"
    return {k: float(r["val_loss"]) for k, r in zip(keys, rows)}


def _copy(finished_sweep, tmp_path):
    import shutil
    src, curves = finished_sweep
    dst = tmp_path / "sw"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock"))
    runs = sorted((dst / "runs").iterdir())
    return dst, runs, curves


def test_scale_stops_on_a_corrupt_checkpoint_and_repair_retrains(texts, finished_sweep, tmp_path,
                                                                  capsys):
    out, runs, curves = _copy(finished_sweep, tmp_path)
    (runs[0] / "done.json").unlink()                  # a run killed near its end ...
    (runs[0] / "ckpt.pt").write_bytes(b"\x00" * 100)  # ... whose checkpoint is damaged
    capsys.readouterr()
    assert _scale(texts, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "weights_only=False" not in err
    assert f"{runs[0] / 'ckpt.pt'}: the checkpoint cannot be read" in err and "--repair" in err
    assert _scale(texts, out, "--repair") == 0
    assert "--repair: moved" in capsys.readouterr().err
    assert _sweep_curves(out) == curves               # the run trained again: the same losses


@pytest.mark.parametrize("damage", ["done_json", "finished_log_cut", "sweep_json"])
def test_scale_and_status_name_a_damaged_file(texts, finished_sweep, tmp_path, capsys, damage):
    from sixn.bench.cli import main
    out, runs, curves = _copy(finished_sweep, tmp_path)
    target = {"done_json": runs[1] / "done.json", "finished_log_cut": runs[1] / "log.csv",
              "sweep_json": out / "sweep.json"}[damage]
    if damage == "finished_log_cut":
        lines = target.read_text().splitlines(keepends=True)
        target.write_text("".join(lines[:3]))          # a finished log shortened (issue's repro)
    else:
        target.write_text(target.read_text()[:40])
    capsys.readouterr()
    assert main(["scale", "--status", "--out", str(out)]) == (0 if damage == "finished_log_cut" else 2)
    err = capsys.readouterr().err
    if damage != "finished_log_cut":
        assert err.count("\n") == 1 and str(target) in err and "Traceback" not in err
    if damage == "sweep_json":
        return   # the sweep command rewrites sweep.json: the next run repairs it by itself
    assert _scale(texts, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "--repair" in err
    assert _scale(texts, out, "--repair") == 0
    assert _sweep_curves(out) == curves


def test_scale_drops_a_torn_log_line_and_resumes_to_the_same_curves(texts, finished_sweep,
                                                                    tmp_path, capsys):
    out, runs, curves = _copy(finished_sweep, tmp_path)
    rd = runs[0]
    (rd / "done.json").unlink()
    ck = torch.load(rd / "ckpt.pt", weights_only=True)
    log = rd / "log.csv"
    lines = log.read_text().splitlines(keepends=True)
    # as if killed in the append of the last row: its checkpoint is the one before
    kept = [ln for ln in lines[1:] if int(ln.split(",")[13]) <= ck["step"]]
    assert lines[0].split(",")[13] == "step"
    log.write_text(lines[0] + "".join(kept[:-1]) + kept[-1][:30])
    prev = int(kept[-2].split(",")[13])
    ck["step"] = prev   # (the checkpoint's own state is that of the last step: fine for this test)
    torch.save(ck, rd / "ckpt.pt")
    capsys.readouterr()
    assert _scale(texts, out) == 0
    assert "dropped a torn last line" in capsys.readouterr().err
    got = _sweep_curves(out)
    assert got.keys() == curves.keys()


def test_divergence_is_said_without_progress_and_no_finished_run_is_exit_1(texts, tmp_path,
                                                                           capsys, monkeypatch):
    from sixn.scaling import train as T
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: math.inf)
    out = tmp_path / "sw"
    from sixn.bench.cli import main
    rc = main(["scale", "--quick", "--sizes", "2x16", "2x24", "--steps", "12", "--corpus",
               str(texts), "--out", str(out), "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = err.splitlines()
    as_it_happens = [ln for ln in lines if ": training diverged at step 2" in ln
                     and "left out of the fits" not in ln]
    at_the_end = [ln for ln in lines if "diverged at step 2 and is left out of the fits" in ln]
    assert len(as_it_happens) == 2 and len(at_the_end) == 2
    assert "no run of the sweep finished (2 of 2 diverged)" in err
    assert "nothing to fit" in err and "neither curves.csv nor summary.csv" not in err


def test_a_run_worse_than_uniform_is_listed_and_left_out(texts, tmp_path, capsys, monkeypatch):
    from sixn.scaling import train as T
    real = T.evaluate
    monkeypatch.setattr(T, "evaluate", lambda model, *a, **k: 2426.0 if model.cfg.d_model == 24
                        else real(model, *a, **k))
    out = tmp_path / "sw"
    assert _scale(texts, out) == 0
    err = capsys.readouterr().err
    assert "worse than a uniform guess over the 256 tokens" in err and "left out of the fits" in err
    from sixn.scaling import sweep as sw
    states = {r["name"].split("-")[2]: r["state"] for r in sw.sweep_status(out)}
    assert states == {"d16": "done", "d24": "diverged"}
    assert len(read_csv_rows(out / "summary.csv")[1]) == 1


@pytest.mark.slow
def test_two_sweeps_started_at_once_on_one_folder(texts, tmp_path, finished_sweep):
    """The issue's repro: two `sixn scale` commands on one folder at the same moment. One trains,
    the other exits 2 in one line naming the holder; no run is trained twice, no row is
    duplicated, and the curves are those of one sweep."""
    import subprocess
    import sys
    out = tmp_path / "cc"
    argv = [sys.executable, "-m", "sixn.bench.cli", "scale", "--quick", "--sizes", "2x16", "2x24",
            "--steps", "24", "--corpus", str(texts), "--out", str(out), "--workers", "1",
            "--no-fit", "--no-progress"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = results[[p.returncode for p in procs].index(2)][1].strip().splitlines()
    assert len(loser) == 1 and "is being run by pid" in loser[0], loser
    from sixn.scaling import sweep as sw
    for rd in (out / "runs").iterdir():
        assert len(sw.attempts(rd)) == 1, rd          # each run trained once
    assert _sweep_curves(out) == finished_sweep[1]    # and the curves are one sweep's


def test_a_damaged_sweep_table_is_named_and_the_next_sweep_rewrites_it(texts, finished_sweep,
                                                                      tmp_path, capsys):
    from sixn.scaling.sweep_fits import fit_sweep
    out, runs, curves = _copy(finished_sweep, tmp_path)
    text = (out / "curves.csv").read_text()
    (out / "curves.csv").write_text(text[: len(text) // 2])   # cut mid-row from outside
    with pytest.raises(CorruptFile, match=r"curves\.csv: line \d+ has \d+ fields, the header \d+ "
                                          r"\(the table was cut or edited\); rerun the sweep's"):
        fit_sweep(out, n_boot=0, write=False)
    assert _scale(texts, out) == 0      # nothing to train: the tables are rewritten from the logs
    assert _sweep_curves(out) == curves


def test_a_kill_at_each_write_of_the_sweep_tables_leaves_them_whole(finished_sweep, tmp_path,
                                                                    monkeypatch):
    """finish_sweep (curves.csv, summary.csv, experiments.json, fits.json, fits.csv) cut off at
    each rename in turn: every file is still there and readable, no temporary file is left, and
    an uninterrupted finish gives the fits of the first one."""
    import json
    from sixn.scaling import launch
    from sixn.scaling import sweep as sw
    from sixn.scaling.tables import read_table
    out, _, _ = _copy(finished_sweep, tmp_path)
    monkeypatch.setattr(launch, "plot_sweep", lambda *a, **k: [])   # plots are not data
    sweep = sw.load_sweep(out)
    launch.finish_sweep(sweep, fit=True, progress=False)
    ref = json.loads((out / "fits.json").read_text())
    real, k = os.replace, 0
    while True:
        names = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        calls = {"n": 0}

        def replace(src, dst, _k=k, _calls=calls):
            if _calls["n"] == _k:
                raise Kill
            _calls["n"] += 1
            return real(src, dst)
        monkeypatch.setattr(os, "replace", replace)
        try:
            launch.finish_sweep(sweep, fit=True, progress=False)
            killed = False
        except Kill:
            killed = True
        monkeypatch.setattr(os, "replace", real)
        if not killed:
            break
        now = {p.name for p in out.iterdir() if p.is_file()}
        assert set(names) <= now and not [n for n in now if n.endswith(".tmp")], k
        for name in ("curves.csv", "summary.csv"):
            assert read_table(out / name)["val_loss"].dtype.kind == "f"
        for name in ("fits.json", "experiments.json", "sweep.json"):
            json.loads((out / name).read_text())
        k += 1
    assert k >= 5
    got = json.loads((out / "fits.json").read_text())
    assert got["by_convention"] == ref["by_convention"] and got["independent"] == ref["independent"]
