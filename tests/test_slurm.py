"""`sixn scale --launcher slurm` on a real Slurm cluster: the sweep's runs as a submitit job array,
with the same results as one local worker, the job ids in --status, no resubmission of finished
runs, and a clear error for a partition that does not exist.

Skipped when no cluster answers (start a one-node one with `.ci/slurm-up.sh`); under .ci/run,
which starts that cluster and sets SIXN_SLURM_REQUIRED, a missing cluster is a failure."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from sixn.bench.cli import main
from sixn.bench.results import read_csv_rows


def _cluster() -> str | None:
    """Why no cluster is usable, or None when sinfo shows a node that takes jobs."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm's commands are not installed"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer"
    states = p.stdout.split()
    if p.returncode or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no Slurm node takes jobs ({(p.stderr or p.stdout).strip()[:200]})"
    return None


WHY = _cluster()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(autouse=True)
def _cluster_up():
    if WHY is None:
        return
    if os.environ.get("SIXN_SLURM_REQUIRED"):
        pytest.fail(f".ci/run started a one-node Slurm cluster, but: {WHY}")
    pytest.skip(f"no Slurm cluster ({WHY}); start a one-node one with .ci/slurm-up.sh")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    code = "".join(f"def g{i}(a, b):\n    return a * {i} - b // {i % 5 + 1}\n\n" for i in range(300))
    (root / "m.py").write_text(code)
    return root


def _args(texts, out, *extra):
    return ["scale", "--quick", "--sizes", "2x16", "2x32", "--steps", "30", "--corpus", str(texts),
            "--out", str(out), "--no-fit", "--no-progress", *extra]


def _curves(out):
    rows = read_csv_rows(out / "curves.csv")[1]
    keys = [(r["run"], int(r["step"])) for r in rows]
    assert len(keys) == len(set(keys))
    return {(r["run"], int(r["step"])): float(r["val_loss"]) for r in rows}


def test_slurm_array_equals_one_local_worker(texts, tmp_path, capsys):
    sl = tmp_path / "slurm"
    assert main(_args(texts, sl, "--launcher", "slurm", "--wait", "--time", "10")) == 0, \
        capsys.readouterr().err
    assert main(_args(texts, tmp_path / "local", "--workers", "1")) == 0
    got, ref = _curves(sl), _curves(tmp_path / "local")
    assert got.keys() == ref.keys() and len(got) == 2 * 6
    assert all(abs(got[k] - ref[k]) <= 1e-6 for k in ref)
    capsys.readouterr()
    # --status: every run done, each with the job id of its array task
    assert main(["scale", "--status", "--json", "--out", str(sl)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["done", "done"]
    ids = [r["slurm_job"] for r in rows]
    assert all(re.fullmatch(r"\d+_\d+", j) for j in ids) and len({j.split("_")[0] for j in ids}) == 1
    book = json.loads((sl / "slurm.json").read_text())["runs"]
    assert sorted(v["job_id"] for v in book.values()) == sorted(ids)
    # resubmitting a finished sweep submits nothing
    assert main(_args(texts, sl, "--launcher", "slurm")) == 0
    assert "submitted 0 run(s)" in capsys.readouterr().err
    assert json.loads((sl / "slurm.json").read_text())["runs"] == book


def test_unknown_partition_is_one_line(texts, tmp_path, capsys):
    assert main(_args(texts, tmp_path / "p", "--launcher", "slurm", "--partition", "no-such-part")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--partition no-such-part: no such partition" in err[0], err


def test_killed_task_resumes_from_its_checkpoint_on_resubmission(texts, tmp_path, capsys):
    """Kill a task mid-run: --status calls the run failed; resubmitting resumes it from its
    checkpoint, and the results equal an uninterrupted local run."""
    from sixn.scaling import launch, sweep as sw
    sl = tmp_path / "c"
    args = ["scale", "--quick", "--sizes", "2x32", "--steps", "2400", "--corpus", str(texts),
            "--no-fit", "--no-progress"]
    assert main(args + ["--out", str(sl), "--launcher", "slurm", "--time", "10"]) == 0
    (job,) = [v["job_id"] for v in json.loads((sl / "slurm.json").read_text())["runs"].values()]
    run_dir, end = None, time.monotonic() + 300
    while time.monotonic() < end:
        run_dir = next((sl / "runs").glob("*"), None) if (sl / "runs").exists() else None
        if run_dir and (run_dir / "ckpt.pt").exists() and not (run_dir / "done.json").exists():
            break
        time.sleep(0.1)
    # SIGKILL to the task and its batch shell: the task dies as a crashed or preempted one does
    # (a plain scancel's SIGTERM is passed over by submitit until Slurm's KillWait runs out)
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True, timeout=60)
    while launch.live_jobs(sl) and time.monotonic() < end:
        time.sleep(0.5)
    assert not (run_dir / "done.json").exists()
    capsys.readouterr()
    assert main(["scale", "--status", "--json", "--out", str(sl)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["state"] == "failed" and job in row["error"]
    assert main(args + ["--out", str(sl), "--launcher", "slurm", "--wait", "--time", "10"]) == 0
    att = sw.attempts(run_dir)
    assert len(att) == 2 and att[1]["logged_step"] > 0 and att[1]["slurm_job"] != att[0]["slurm_job"]
    assert main(args + ["--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    got, ref = _curves(sl), _curves(tmp_path / "local")
    assert got.keys() == ref.keys() and all(abs(got[k] - ref[k]) <= 1e-6 for k in ref)
