"""Sweeps beyond one process: claims, `--workers N`, a worker killed mid-run, two commands on one
folder, data-parallel runs under torchrun (gloo), and the Slurm launcher's errors. The real Slurm
path is tests/test_slurm.py."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sixn.bench.cli import main
from sixn.bench.results import read_csv_rows
from sixn.scaling import claims, launch
from sixn.scaling import sweep as sw
from sixn.scaling.train import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    code = "".join(f"def g{i}(a, b):\n    return a * {i} - b // {i % 5 + 1}\n\n" for i in range(300))
    (root / "m.py").write_text(code)
    return root


def _args(texts, out, *extra, sizes=("2x16", "2x24", "2x32"), steps=30):
    return ["scale", "--quick", "--sizes", *sizes, "--steps", str(steps), "--corpus", str(texts),
            "--out", str(out), "--no-fit", "--no-progress", *extra]


def _final_losses(out: Path) -> dict[str, float]:
    return {r["name"]: r["val_loss"] for r in sw.sweep_status(out)}


def _curves(out: Path) -> dict[tuple[str, int], float]:
    rows = read_csv_rows(out / "curves.csv")[1]
    keys = [(r["run"], int(r["step"])) for r in rows]
    assert len(keys) == len(set(keys)), "a run's evaluation appears twice in curves.csv"
    return {(r["run"], int(r["step"])): float(r["val_loss"]) for r in rows}


def _cli(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sixn.bench.cli", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout=120, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------

def test_claims_conflict_and_die_with_their_holder(tmp_path):
    lock = tmp_path / "run" / "claim.lock"
    a = claims.try_claim(lock, "train")
    assert a is not None and claims.try_claim(lock) is None   # per open file: even in one process
    h = claims.holder(lock)
    assert h["pid"] == os.getpid() and h["role"] == "train"
    a.release()
    assert claims.holder(lock) is None and claims.claim(lock, timeout=0.1) is not None
    # a holder that is SIGKILLed lets go at once: no stale claim
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from sixn.scaling import claims, launch
        c = claims.try_claim({str(tmp_path / 'other.lock')!r}, "train")
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert claims.try_claim(tmp_path / "other.lock") is None
    assert claims.holder(tmp_path / "other.lock")["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert claims.claim(tmp_path / "other.lock", timeout=5) is not None


# --------------------------------------------------------------------------------------------
# Local workers
# --------------------------------------------------------------------------------------------

def test_device_slots_share_out_cores_and_gpus(monkeypatch):
    monkeypatch.setattr(launch, "usable_cpus", lambda: [0, 1])
    assert launch.device_slots("cpu", None, 1) == [{"gpus": [], "cpus": [0]}, {"gpus": [], "cpus": [1]}]
    assert launch.device_slots("cpu", None, 2) == [{"gpus": [], "cpus": [0, 1]}]
    assert [s["cpus"] for s in launch.device_slots("cpu", 3, 1)] == [[0], [1], [0]]
    monkeypatch.setattr(launch, "usable_cpus", lambda: list(range(16)))
    monkeypatch.setattr(launch.torch.cuda, "device_count", lambda: 8)
    slots = launch.device_slots("cuda", None, 2)
    assert len(slots) == 4
    gpus = [g for s in slots for g in s["gpus"]]
    cpus = [c for s in slots for c in s["cpus"]]
    assert sorted(gpus) == list(range(8)) and sorted(cpus) == list(range(16))  # disjoint, all used
    with pytest.raises(launch.LaunchError, match="needs 10 GPUs"):
        launch.device_slots("cuda", 5, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4,5,6,7,8,9,10")
    assert launch._worker_env(slots[1], 1)["CUDA_VISIBLE_DEVICES"] == "5,6"


def test_more_threads_than_cores_is_said(monkeypatch, capsys):
    monkeypatch.setattr(launch, "usable_cpus", lambda: [0, 1])
    launch._warn_oversubscribed("cpu", 2, launch.LaunchConfig(threads=2))
    err = capsys.readouterr().err
    assert "2 worker(s) x 1 process(es) x 2 threads = 4 torch threads on 2 cores" in err
    for workers, cfg in ((1, launch.LaunchConfig(threads=2)), (3, launch.LaunchConfig()),
                         (3, launch.LaunchConfig(threads=1))):
        launch._warn_oversubscribed("cpu", workers, cfg)   # fits, or one thread per process
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_two_workers_give_the_same_runs_as_one(texts, tmp_path, capsys):
    assert main(_args(texts, tmp_path / "one", "--workers", "1")) == 0
    assert main(_args(texts, tmp_path / "two", "--workers", "2")) == 0
    one, two = _final_losses(tmp_path / "one"), _final_losses(tmp_path / "two")
    assert set(one) == set(two) and len(one) == 3
    for name in one:
        assert abs(one[name] - two[name]) <= 1e-6, name
    c1, c2 = _curves(tmp_path / "one"), _curves(tmp_path / "two")
    assert c1.keys() == c2.keys()
    assert all(abs(c1[k] - c2[k]) <= 1e-6 for k in c1)
    # every run trained once, by this process or by the worker forked from it
    att = [sw.attempts(tmp_path / "two" / "runs" / n) for n in two]
    assert all(len(a) == 1 for a in att)
    assert len({a[0]["pid"] for a in att} | {os.getpid()}) == 2
    launched = json.loads((tmp_path / "two" / "launch.json").read_text())
    assert launched["workers"] == 2 and len(launched["runs_to_train"]) == 3 and launched["wall_s"] > 0


def test_cpu_workers_are_forked_and_gpu_workers_spawned(texts, tmp_path, monkeypatch):
    """A CPU worker is forked (it has the corpus and the step counts of this process at once);
    a GPU worker or a data-parallel one is a fresh interpreter (CUDA does not survive a fork)."""
    plan = sw.build_plan("cpu", quick=True, sizes=["2x16"], corpus=[str(texts)])
    sweep = sw.prepare_sweep(plan, tmp_path, "cpu")
    try:
        cfg = launch.LaunchConfig()
        assert launch.can_fork(sweep, {"gpus": [], "cpus": [0]}, cfg)
        assert not launch.can_fork(sweep, {"gpus": [], "cpus": [0, 1]},
                                   launch.LaunchConfig(gpus_per_run=2))
        assert not launch.can_fork(sweep, {"gpus": [0], "cpus": [0]}, cfg)
        # two torch threads: OpenMP's pool does not survive a fork (the child would hang)
        assert not launch.can_fork(sweep, {"gpus": [], "cpus": [0]}, launch.LaunchConfig(threads=2))
        started = []
        monkeypatch.setattr(launch.subprocess, "Popen", lambda cmd, **kw: started.append(cmd))
        launch._start_worker(sweep, {"gpus": [], "cpus": [0]}, launch.LaunchConfig(gpus_per_run=2))
        assert started and started[0][1:4] == ["-m", "sixn.scaling.workers", "worker"]
    finally:
        sweep.release()


def test_launch_json_adds_up_the_rounds_of_one_command(texts, tmp_path, monkeypatch):
    """An IsoFLOP command's extension rounds and its final fits add up in launch.json; a later
    command's launch replaces the record."""
    plan = sw.build_plan("cpu", quick=True, sizes=["2x16", "2x24"], corpus=[str(texts)])
    sweep = sw.prepare_sweep(plan, tmp_path, "cpu")
    try:
        cfg = launch.LaunchConfig(workers=2)
        launch.record_launch(sweep, cfg, 2, sweep.runs, 10.04)
        launch.record_launch(sweep, cfg, 1, sweep.runs[:1], 3.0)
        launch.record_finish(sweep.dir, 1.5)
        rec = json.loads((sweep.dir / "launch.json").read_text())
        assert [r["wall_s"] for r in rec["rounds"]] == [10.0, 3.0] and rec["finish_wall_s"] == 1.5
        assert rec["wall_s"] == 14.5 and len(rec["runs_to_train"]) == 3 and rec["workers"] == 2
        assert [r["workers"] for r in rec["rounds"]] == [2, 1]
        assert rec["provenance"]["command"]
        monkeypatch.setattr(launch, "INVOCATION", "another command")
        launch.record_finish(sweep.dir, 99.0)   # not this command's record: left alone
        assert json.loads((sweep.dir / "launch.json").read_text())["wall_s"] == 14.5
        launch.record_launch(sweep, cfg, 2, [], 0.5)   # trained nothing: the record stays
        assert json.loads((sweep.dir / "launch.json").read_text())["wall_s"] == 14.5
        launch.record_launch(sweep, cfg, 2, sweep.runs[1:], 0.5)
        rec = json.loads((sweep.dir / "launch.json").read_text())
        assert rec["wall_s"] == 0.5 and len(rec["rounds"]) == 1 and len(rec["runs_to_train"]) == 1
    finally:
        sweep.release()


def test_a_spawned_worker_trains_a_prepared_sweep(texts, tmp_path):
    """`python -m sixn.scaling.workers worker DIR` (what GPU workers run): it loads the sweep from
    its folder, pins itself to the core it is given and trains every run, as this process would."""
    plan = sw.build_plan("cpu", quick=True, sizes=["2x16", "2x24"], steps=20, corpus=[str(texts)])
    sweep = sw.prepare_sweep(plan, tmp_path / "w", "cpu")
    sweep.release()
    p = subprocess.run([sys.executable, "-m", "sixn.scaling.workers", "worker", str(sweep.dir),
                        "--cpus", "0", "--parent", str(os.getpid())],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = sw.sweep_status(sweep.dir)
    assert [r["state"] for r in rows] == ["done", "done"]
    pids = {sw.attempts(sweep.run_dir(r["name"]))[0]["pid"] for r in rows}
    assert len(pids) == 1 and os.getpid() not in pids
    ref = sw.prepare_sweep(plan, tmp_path / "here", "cpu")
    try:
        sw.work(ref)
    finally:
        ref.release()
    assert _final_losses(tmp_path / "here") == {r["name"]: r["val_loss"] for r in rows}


@pytest.mark.slow
def test_killed_worker_and_a_second_command(texts, tmp_path, capsys):
    """SIGKILL a worker process mid-run: its run is taken over from the last checkpoint (at most
    one evaluation interval lost), no table is corrupt, no run is trained twice to completion, and
    the results equal one uninterrupted worker's; a second command on the same folder meanwhile
    exits 2 saying who holds it. (Three workers on two cores: the command's own process is one,
    so that two are processes of their own.)"""
    out = tmp_path / "sweep"
    sizes = ("2x16", "2x24", "2x32")
    argv = _args(texts, out, "--workers", "3", sizes=sizes, steps=300)
    first = _cli(*argv)
    sweep_lock = out / claims.SWEEP_LOCK

    def mid_run():
        for rd in (out / "runs").glob("*"):
            rows = read_csv_rows(rd / "log.csv")[1] if (rd / "log.csv").exists() else []
            h = claims.holder(rd / claims.CLAIM_FILE)
            if rows and h and h.get("pid") not in (None, first.pid) \
                    and not (rd / "done.json").exists() and int(rows[-1]["step"]) <= 200:
                return rd, h["pid"]
        return None
    _wait_for(lambda: claims.holder(sweep_lock), what="the sweep lock")
    # a second command on the folder: refused with one line naming the holder
    assert main(_args(texts, out, "--workers", "2", sizes=sizes, steps=300)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is being run by pid" in err[0] and str(first.pid) in err[0], err
    run_dir, pid = _wait_for(mid_run, what="a run mid-way")
    os.kill(pid, signal.SIGSTOP)    # frozen, still holding its claim: its files stay as they are
    assert len(os.sched_getaffinity(pid)) == 1    # a worker is pinned to one core
    # the checkpoint is that of the last logged row, or of the one before when the kill comes
    # between a row and its checkpoint (that row is dropped on resume): at most one interval lost
    ckpt = run_dir / "ckpt.pt"
    ck = load_checkpoint(ckpt)["step"] if ckpt.exists() else 0
    logged = int(read_csv_rows(run_dir / "log.csv")[1][-1]["step"])
    interval = 300 // 6
    assert ck in (logged, logged - interval)
    os.kill(pid, signal.SIGKILL)
    _, stderr = first.communicate(timeout=600)
    # the surviving worker took the killed run over; the command says a worker died
    assert "ended abnormally" in stderr
    assert first.returncode == 0, stderr
    assert main(_args(texts, out, "--workers", "2", sizes=sizes, steps=300)) == 0
    att = sw.attempts(run_dir)
    assert [a["pid"] for a in att][0] == pid and len(att) == 2 and att[1]["logged_step"] == logged
    others = [rd for rd in (out / "runs").glob("*") if rd != run_dir]
    assert [len(sw.attempts(rd)) for rd in others] == [1, 1]
    # the same results as one uninterrupted worker
    assert main(_args(texts, tmp_path / "ref", "--workers", "1", sizes=sizes, steps=300)) == 0
    ref, got = _curves(tmp_path / "ref"), _curves(out)
    assert ref.keys() == got.keys() and all(abs(ref[k] - got[k]) <= 1e-6 for k in ref)
    summary = read_csv_rows(out / "summary.csv")[1]
    assert len(summary) == 3 and len({r["run"] for r in summary}) == 3


def test_workers_end_when_the_launcher_is_killed(texts, tmp_path):
    """SIGKILL the `sixn scale` process itself: its worker processes stop within seconds (they do
    not go on training for a launcher that is gone), their claims go with them, and no run was
    finished by an orphan."""
    out = tmp_path / "sweep"
    argv = _args(texts, out, "--workers", "3", sizes=("2x16", "2x24", "2x32"), steps=3000)
    first = _cli(*argv)

    def worker_training():
        for rd in (out / "runs").glob("*"):
            h = claims.holder(rd / claims.CLAIM_FILE)
            if h and h.get("pid") not in (None, first.pid) and (rd / "log.csv").exists():
                return h["pid"]
        return None
    pid = _wait_for(worker_training, what="a worker process training a run")
    first.kill()
    first.communicate()

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:   # ended but not yet reaped (a zombie) counts
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True
    _wait_for(gone, timeout=30, what=f"worker {pid} to end after its launcher was killed")
    held = [rd.name for rd in (out / "runs").glob("*") if claims.holder(rd / claims.CLAIM_FILE)]
    assert held == [], f"claims still held after the launcher and its workers died: {held}"
    assert not any((rd / "done.json").exists() for rd in (out / "runs").glob("*"))


# --------------------------------------------------------------------------------------------
# Data-parallel runs (torchrun, gloo)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gpus_per_run_two_gloo_processes_match_one(texts, tmp_path, capsys):
    assert main(_args(texts, tmp_path / "one", "--workers", "1", sizes=("2x32",), steps=30)) == 0
    assert main(_args(texts, tmp_path / "ddp", "--workers", "1", "--gpus-per-run", "2",
                      sizes=("2x32",), steps=30)) == 0
    one = read_csv_rows(next((tmp_path / "one" / "runs").glob("*")) / "log.csv")[1]
    run_dir = next((tmp_path / "ddp" / "runs").glob("*"))
    ddp = read_csv_rows(run_dir / "log.csv")[1]
    assert [r["step"] for r in one] == [r["step"] for r in ddp]
    for a, b in zip(one, ddp):
        # compute is counted once per step for the whole world: the single-process figures
        for k in ("tokens", "C_kaplan_6N", "C_full_model", "C_measured", "batch_size"):
            assert a[k] == b[k], k
        # the same global batches and updates, up to the order of the gradient sums
        assert float(b["val_loss"]) == pytest.approx(float(a["val_loss"]), rel=1e-4)
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
        if a["b_simple"]:
            assert float(b["b_simple"]) == pytest.approx(float(a["b_simple"]), rel=1e-2)
    (att,) = sw.attempts(run_dir)
    assert att["processes"] == 2 and att["pid"] != os.getpid()


# --------------------------------------------------------------------------------------------
# Slurm launcher: errors without a cluster
# --------------------------------------------------------------------------------------------

def _fake_slurm(bin_dir: Path) -> None:
    """sinfo / squeue / sbatch stand-ins for a cluster whose one partition is `debug`."""
    bin_dir.mkdir()
    for tool, body in (("sinfo", 'echo "debug* 1"'), ("squeue", "true"),
                       ("sbatch", 'echo "sbatch: error: not expected" >&2; exit 1')):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)


def test_slurm_launcher_errors(texts, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(_args(texts, tmp_path / "s", "--launcher", "slurm")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs Slurm's commands" in err[0] and "sbatch" in err[0], err
    _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert main(_args(texts, tmp_path / "s", "--launcher", "slurm", "--partition", "gpu")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--partition gpu: no such partition" in err[0] \
        and "debug (default)" in err[0], err
    assert not (tmp_path / "s" / "runs").exists()        # nothing was trained or submitted
    assert main(_args(texts, tmp_path / "s", "--partition", "debug")) == 2
    assert "go with --launcher slurm" in capsys.readouterr().err
    assert main(_args(texts, tmp_path / "s", "--launcher", "slurm", "--workers", "2")) == 2
    assert "--workers is for --launcher local" in capsys.readouterr().err


def test_time_budget_leaves_runs_for_a_resume(texts, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(_args(texts, out, "--workers", "2", "--time-budget", "0.001")) == 0
    assert "time budget spent" in capsys.readouterr().err
    not_run = json.loads((out / "not_run.json").read_text())["runs"]
    assert sorted(not_run) == sorted(r["name"] for r in sw.sweep_status(out))
    assert all(r["state"] == "new" for r in sw.sweep_status(out))


@pytest.mark.gpu
def test_gpu_workers_and_nccl_runs_match_one(texts, tmp_path, capsys):
    """On GPUs: one worker per GPU, and (with two GPUs) a run DDP over NCCL, against one worker."""
    import torch
    gpu = ("--device", "cuda", "--preset-set", "cpu")
    assert main(_args(texts, tmp_path / "one", *gpu, "--workers", "1")) == 0
    assert main(_args(texts, tmp_path / "all", *gpu)) == 0
    one, every = _final_losses(tmp_path / "one"), _final_losses(tmp_path / "all")
    assert one.keys() == every.keys()
    assert all(every[k] == pytest.approx(one[k], rel=1e-4) for k in one)
    if torch.cuda.device_count() >= 2:
        assert main(_args(texts, tmp_path / "ddp", *gpu, "--workers", "1", "--gpus-per-run", "2")) == 0
        ddp = _final_losses(tmp_path / "ddp")
        assert all(ddp[k] == pytest.approx(one[k], rel=1e-3) for k in one)
        assert all(a["processes"] == 2 for n in ddp for a in sw.attempts(tmp_path / "ddp" / "runs" / n))
