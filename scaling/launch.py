"""Launchers: run a sweep in this process, on every core or GPU of this machine, with data-parallel
runs through torchrun, or on a Slurm cluster through submitit; then merge the tables, write
experiments.json and fit and plot. The sweep folder is the single source of truth.

One run is one unit of work. scaling.sweep.prepare_sweep writes sweep.json with every run fully
resolved; any worker, wherever it runs, reads it, claims a run (scaling.claims: a flock that the
kernel drops when the worker dies), trains or resumes it from its checkpoint, and merges the
tables. Rerunning any launcher therefore resumes, and a run is never trained by two workers.

- in this process (run_sweep): the runs one after another, the progress bar fed by the loop.
- local, `--workers N` (run_local): N worker processes (scaling.workers),
  pinned one per CPU core with one torch thread each (forked from the command, so that they
  start at once with its corpus and step counts), or one per GPU through CUDA_VISIBLE_DEVICES
  (K per worker with --gpus-per-run K; fresh interpreters). Each takes the costliest unclaimed
  run, then the next; when only runs held by others are left it waits on their claims, so that a
  run whose worker was killed is resumed by another. The command follows the workers' progress
  through the folder. One worker and one device per run train in the command's own process.
- data-parallel runs, `--gpus-per-run K`: a worker starts each run under torchrun (K processes on
  this node, NCCL on GPUs, gloo on the CPU, one core each); rank 0 claims the run (so the claim
  lives as long as the training processes do) and scaling.train.World splits the global batch.
- Slurm (submit_slurm): one job array through submitit, one task per unfinished run (torchrun
  inside when K > 1); a task resumes its run from the checkpoint, and submitit requeues a task
  that is preempted or reaches its time limit. slurm.json records each run's job id for
  `sixn scale --status`; resubmitting leaves out runs that are finished, queued or running. The
  sweep folder must be on a filesystem the nodes share: the command warns when it is on a local
  one and the partition has other nodes, and a task that cannot see sweep.json fails saying so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch

from sixn.bench.errors import CorruptFile
from sixn.bench.results import write_json

from . import runstate
from . import sweep as sw
from .experiments import write_experiments
from .plots import plot_sweep
from .sweep_fits import fit_sweep
from .workers import SlurmTask, forked_worker, pin, usable_cpus

LOCAL_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "overlay", "f2fs",
                     "vfat", "ramfs"}


POLL_S = 0.1   # how often the command looks at its workers and their logs (a stat per run)


class LaunchError(ValueError):
    """A launcher cannot start (no Slurm, unknown partition, bad worker counts): exit 2."""


@dataclass(frozen=True)
class LaunchConfig:
    """How the runs of a sweep are spread over processes, devices and machines."""

    launcher: str = "local"           # local | slurm
    workers: int | None = None        # local: runs at once (None: all GPUs / all cores)
    gpus_per_run: int = 1             # devices per run (CPU: processes per run), torchrun when > 1
    partition: str | None = None      # slurm: None = the cluster's default partition
    time_min: int = 60                # slurm: each task's time limit
    account: str | None = None        # slurm
    wait: bool = False                # slurm: wait for the array, following its progress
    threads: int | None = None        # torch CPU threads per process (default 1)
    repair: bool = False              # set damaged runs' files aside and train them again

    def __post_init__(self) -> None:
        if self.launcher not in ("local", "slurm"):
            raise LaunchError(f"unknown launcher {self.launcher!r}; supported: local, slurm")
        if self.workers is not None and self.workers < 1:
            raise LaunchError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_run < 1:
            raise LaunchError(f"--gpus-per-run must be at least 1, got {self.gpus_per_run}")
        if self.time_min < 1:
            raise LaunchError(f"--time must be at least 1 minute, got {self.time_min}")


def device_slots(device: str, workers: int | None, gpus_per_run: int) -> list[dict]:
    """One dict per local worker: the CPU cores it is pinned to and the GPUs it sees.

    GPUs: all of them in groups of gpus_per_run (workers = GPUs // K unless fewer are asked for),
    the cores shared out evenly. CPU: one core per process, K per worker, workers = cores // K
    by default (more workers than cores share cores round-robin)."""
    cpus = usable_cpus()
    K = gpus_per_run
    if torch.device(device).type == "cuda":
        n_gpu = torch.cuda.device_count()
        if K > n_gpu:
            raise LaunchError(f"--gpus-per-run {K} needs {K} GPUs; torch sees {n_gpu}")
        most = n_gpu // K
        n = most if workers is None else workers
        if n > most:
            raise LaunchError(f"--workers {n} x --gpus-per-run {K} needs {n * K} GPUs; "
                              f"torch sees {n_gpu}")
        per = max(1, len(cpus) // n)
        return [{"gpus": list(range(i * K, (i + 1) * K)),
                 "cpus": cpus[i * per:(i + 1) * per] or cpus} for i in range(n)]
    n = workers if workers is not None else max(1, len(cpus) // K)
    return [{"gpus": [], "cpus": [cpus[(i * K + j) % len(cpus)] for j in range(K)]}
            for i in range(n)]


def drawing_processes(device: str, cfg: LaunchConfig) -> int:
    """How many processes draw a sweep's figures: as many as it has local workers (one under
    Slurm, where the command's node is not the training nodes)."""
    return 1 if cfg.launcher == "slurm" else len(device_slots(device, cfg.workers, cfg.gpus_per_run))


# --------------------------------------------------------------------------------------------
# In this process, and the end of every sweep: tables, experiments, fits, plots
# --------------------------------------------------------------------------------------------

def finish_sweep(sweep: sw.Sweep, fit: bool = True, progress: bool = True,
                 deadline: float | None = None, processes: int = 1) -> None:
    """The tables, experiments.json, then the fits and plots (figures drawn by `processes`
    processes), from whatever runs are finished. With a deadline, the runs it left unstarted are
    listed in not_run.json (removed otherwise)."""
    sw.collect(sweep.dir, sweep.runs, sweep.prov)
    not_run = [r.name for r in sweep.pending()
               if not (sweep.run_dir(r) / "failed.json").exists()] if deadline is not None else []
    if not_run:
        write_json(sweep.dir / "not_run.json", {"runs": not_run, "reason": "time budget spent"},
                   sweep.prov)
        print(f"sixn scale: time budget spent: {len(not_run)} runs not started or not finished "
              f"({', '.join(not_run)}); rerun without --time-budget to finish them", file=sys.stderr)
    else:
        (sweep.dir / "not_run.json").unlink(missing_ok=True)
    write_experiments(sweep.dir)
    done = [r for r in sweep.runs if (sweep.run_dir(r) / "done.json").exists()]
    if fit and not done:
        print("sixn scale: no run of the sweep finished, so there is nothing to fit",
              file=sys.stderr)
    elif fit:
        for n in fit_and_plot(sweep.dir, processes):
            if progress or not n.endswith(" done"):  # a failed fit or plot is always said
                print(f"sixn scale: {n}", file=sys.stderr)


@contextlib.contextmanager
def cpu_threads(device: str, threads: int | None):
    """torch CPU threads while a CPU sweep runs in this process (default 1: the ladder's small
    matmuls gain little from a second thread and lose a lot when another process holds the core)."""
    if torch.device(device).type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or 1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def run_sweep(plan: sw.SweepPlan | str | None = None, out_dir: str | Path | None = None,
              device: str | None = None, quick: bool = False, progress: bool = True,
              fit: bool = True, threads: int | None = None, deadline: float | None = None,
              repair: bool = False) -> Path:
    """Run (or resume) every run of `plan` in this process, one after another, and write
    curves.csv, summary.csv, experiments.json, then the fits and plots (scaling.sweep_fits,
    scaling.plots). Returns the folder. (run_local runs the same work in parallel.)

    plan: a SweepPlan, a preset-set name ("cpu" / "gpu") or None for this device's default.
    threads: torch CPU threads while it runs (see cpu_threads).
    deadline (time.time()): runs not started by then are left for a resume and listed in
    not_run.json; the fits use the runs that finished."""
    dev = sw._device(device)
    sweep = sw.prepare_sweep(plan, out_dir, dev, quick, repair=repair)
    try:
        _work_here(sweep, progress, threads, deadline)
        finish_sweep(sweep, fit, progress, deadline)
    finally:
        sweep.release()
    return sweep.dir


def _work_here(sweep: sw.Sweep, progress: bool, threads: int | None,
               deadline: float | None = None) -> None:
    """The sweep's unfinished runs, trained in this process with a progress bar."""
    with cpu_threads(sweep.device, threads):
        bar = sw.Progress({r.name: r.cost for r in sweep.runs}, enabled=progress)
        try:
            sw.announce_finished(sweep, bar)
            sw.work(sweep, bar=bar, deadline=deadline)
        finally:
            bar.close()


def fit_and_plot(sweep_dir: Path, processes: int = 1) -> list[str]:
    """fit_sweep (writes fits.json / fits.csv), then plot_sweep on that result, its figures drawn
    by `processes` processes; say what happened. A failing fit or plot is reported, never
    raised: it must not lose the sweep's data."""
    notes = []
    try:
        result = fit_sweep(sweep_dir)
        notes.append("fits done")
        notes += [f"warning: {w}" for w in result.get("warnings", [])]
    except Exception as e:
        return [f"fits failed: {type(e).__name__}: {e}"]
    try:
        plot_sweep(sweep_dir, result, processes=processes)
        notes.append("plots done")
    except Exception as e:
        notes.append(f"plots failed: {type(e).__name__}: {e}")
    return notes


# --------------------------------------------------------------------------------------------
# Local workers
# --------------------------------------------------------------------------------------------

def run_local(plan, out_dir, device: str, cfg: LaunchConfig, progress: bool = True,
              fit: bool = True, deadline: float | None = None) -> Path:
    """Run (or resume) the sweep with cfg.workers processes at once on this machine; then the
    tables, experiments, fits and plots. When one process is enough (one worker, or at most one
    unfinished run, and one device per run) the runs train in this process (as run_sweep)."""
    t0 = time.perf_counter()
    slots = device_slots(device, cfg.workers, cfg.gpus_per_run)
    sweep = sw.prepare_sweep(plan, out_dir, device, repair=cfg.repair)
    try:
        pending = sweep.pending()
        slots = slots[:len(pending)] if deadline is None or time.time() < deadline else []
        _warn_oversubscribed(device, len(slots), cfg)
        if cfg.gpus_per_run == 1 and len(slots) <= 1:
            _work_here(sweep, progress, cfg.threads, deadline)
        elif slots:
            _work_in_processes(sweep, slots, cfg, progress, deadline)
        finish_sweep(sweep, fit, progress, deadline, processes=drawing_processes(device, cfg))
        record_launch(sweep, cfg, len(slots), pending, time.perf_counter() - t0)
    finally:
        sweep.release()
    return sweep.dir


def _warn_oversubscribed(device: str, workers: int, cfg: LaunchConfig) -> None:
    """One line when a CPU sweep would run more torch threads than there are cores."""
    threads, cores = workers * cfg.gpus_per_run * (cfg.threads or 1), len(usable_cpus())
    if torch.device(device).type == "cpu" and (cfg.threads or 1) > 1 and threads > cores:
        print(f"sixn scale: warning: {workers} worker(s) x {cfg.gpus_per_run} process(es) x "
              f"{cfg.threads} threads = {threads} torch threads on {cores} cores: OpenMP threads "
              f"that share a core wait on each other and the runs can be many times slower; use "
              f"--threads 1 (the default) or fewer --workers", file=sys.stderr)


# this command, as launch.json names it: the rounds of one command (an IsoFLOP sweep's
# extensions) add up in one record, a later command's replace it
INVOCATION = f"{os.uname().nodename}:{os.getpid()}:{time.time():.3f}"
LAUNCH_FILE = "launch.json"


def _this_commands_launch(sweep_dir: Path) -> dict | None:
    """launch.json when this command wrote it (an earlier round), else None."""
    try:
        old = json.loads((sweep_dir / LAUNCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) and old.get("invocation") == INVOCATION else None


def record_launch(sweep: sw.Sweep, cfg: LaunchConfig, workers: int, trained: list,
                  wall_s: float) -> None:
    """launch.json: how this command ran the sweep (launcher, workers, devices per run, the runs
    it had to train) and its wall clock from start to the last plot. The rounds of one command
    (an IsoFLOP sweep's extensions) add up: their runs, their wall clock, the most workers any
    round ran, and a list of rounds;
    a later command that resumes the sweep replaces the record with its own, unless it had
    nothing to train (it only fitted and plotted: the record of how the runs were run stays)."""
    rounds = [{"runs_to_train": [r.name for r in trained], "workers": workers,
               "wall_s": round(wall_s, 1)}]
    old = _this_commands_launch(sweep.dir)
    if old is not None:
        rounds = old.get("rounds", []) + rounds
    elif not trained and (sweep.dir / LAUNCH_FILE).exists():
        return
    write_json(sweep.dir / LAUNCH_FILE, {
        "launcher": cfg.launcher, "workers": max(r["workers"] for r in rounds),
        "gpus_per_run": cfg.gpus_per_run,
        "threads_per_process": cfg.threads or 1, "cpus": len(usable_cpus()),
        "runs_to_train": [n for r in rounds for n in r["runs_to_train"]], "runs": len(sweep.runs),
        "wall_s": round(sum(r["wall_s"] for r in rounds), 1), "rounds": rounds,
        "invocation": INVOCATION}, sweep.prov)


def record_finish(sweep_dir: Path, wall_s: float) -> None:
    """Add the fits and plots that this command made after its last round (an IsoFLOP sweep
    with extensions) to its launch.json: wall_s is then the command's from start to end."""
    old = _this_commands_launch(sweep_dir)
    if old is None:
        return
    old["finish_wall_s"] = round(wall_s, 1)
    old["wall_s"] = round(sum(r["wall_s"] for r in old.get("rounds", [])) + wall_s, 1)
    write_json(sweep_dir / LAUNCH_FILE, old)


def _work_in_processes(sweep: sw.Sweep, slots: list[dict], cfg: LaunchConfig,
                       progress: bool, deadline: float | None = None) -> None:
    """One worker per slot, the first being this process when a run needs one device (it has
    the corpus loaded already and starts at once); the others are processes of their own. This
    process follows the others through the folder while it trains and after, and takes over
    any run that a worker which died has left."""
    bar = sw.Progress({r.name: r.cost for r in sweep.runs}, enabled=progress)
    follower = Follower(sweep, bar)
    here = cfg.gpus_per_run == 1
    procs: list[subprocess.Popen | ForkedWorker] = []
    try:
        sw.announce_finished(sweep, bar)
        procs = [_start_worker(sweep, slot, cfg, deadline) for slot in slots[here:]]
        bar.poll = follower.poll
        while True:
            ended = all(p.poll() is not None for p in procs)
            if here:
                with _pinned(slots[0]["cpus"]), cpu_threads(sweep.device, cfg.threads):
                    sw.work(sweep, bar=bar, wait=False, deadline=deadline)
            follower.poll()
            if ended:
                break
            time.sleep(POLL_S)
    finally:
        for p in procs:   # on an interrupt: stop the workers (their claims go with them)
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        bar.close()
    bad = [p.returncode for p in procs if p.returncode]
    if bad:
        left = sweep.pending()
        print(f"sixn scale: {len(bad)} worker(s) ended abnormally (exit "
              f"{', '.join(map(str, bad))}); "
              + ("their runs were taken over" if not left else
                 "rerun the command to resume the unfinished runs from their last checkpoint"),
              file=sys.stderr)


@contextlib.contextmanager
def _pinned(cpus: list[int]):
    """This process on `cpus` only, for the block (the affinity is restored after)."""
    try:
        saved = os.sched_getaffinity(0)
    except AttributeError:
        yield
        return
    pin(cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def command_line() -> str:
    """The sixn command this process runs for (what the workers' provenance records)."""
    return os.environ.get("SIXN_COMMAND") or " ".join(["sixn", *sys.argv[1:]])


def _worker_env(slot: dict, threads: int) -> dict:
    env = dict(os.environ)
    env["SIXN_COMMAND"] = command_line()
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if slot["gpus"]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(g) for g in range(torch.cuda.device_count())]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[g] for g in slot["gpus"])
    return env


class ForkedWorker:
    """A CPU worker forked from this process (scaling.workers.forked_worker), with Popen's
    poll / terminate / wait / returncode / pid. Forking shares the loaded corpus and the step
    FLOP counts made so far, and skips a fresh interpreter's imports. It is safe here because the
    child runs torch with one thread (it never enters the OpenMP pool it inherits) and no claim
    is held at the fork (can_fork says when a worker is forked)."""

    def __init__(self, sweep: sw.Sweep, slot: dict, cfg: LaunchConfig,
                 deadline: float | None = None):
        ctx = multiprocessing.get_context("fork")
        with warnings.catch_warnings():   # Python >= 3.12 warns of torch's idle OpenMP threads
            warnings.simplefilter("ignore", DeprecationWarning)
            self._p = ctx.Process(target=forked_worker, name="sixn-worker",
                                  args=(sweep, slot["cpus"], cfg.threads or 1, os.getpid(),
                                        deadline))
            self._p.start()
        self.pid = self._p.pid

    @property
    def returncode(self) -> int | None:
        return self._p.exitcode

    def poll(self) -> int | None:
        return self._p.exitcode

    def terminate(self) -> None:
        self._p.terminate()

    def wait(self) -> int:
        self._p.join()
        return self._p.exitcode


def can_fork(sweep: sw.Sweep, slot: dict, cfg: LaunchConfig) -> bool:
    """A worker that trains on the CPU with one torch thread, one process per run, on Linux.
    With more threads it is spawned: GNU OpenMP's pool does not survive a fork, and a forked
    child that enters a parallel region with two threads hangs. (macOS forks badly too.)"""
    return (not slot["gpus"] and cfg.gpus_per_run == 1 and (cfg.threads or 1) == 1
            and torch.device(sweep.device).type == "cpu" and sys.platform.startswith("linux"))


def _start_worker(sweep: sw.Sweep, slot: dict, cfg: LaunchConfig,
                  deadline: float | None = None) -> subprocess.Popen | ForkedWorker:
    if can_fork(sweep, slot, cfg):
        return ForkedWorker(sweep, slot, cfg, deadline)
    sweep_dir = sweep.dir
    threads = cfg.threads or 1
    cmd = [sys.executable, "-m", "sixn.scaling.workers", "worker", str(sweep_dir),
           "--cpus", ",".join(map(str, slot["cpus"])), "--gpus-per-run", str(cfg.gpus_per_run),
           "--threads", str(threads), "--parent", str(os.getpid())]
    if deadline is not None:
        cmd += ["--deadline", repr(deadline)]
    return subprocess.Popen(cmd, env=_worker_env(slot, threads))


class Follower:
    """Feeds a progress bar from the runs' logs, which other processes write: each poll() reads
    the logs that changed since the last one."""

    def __init__(self, sweep: sw.Sweep, bar: sw.Progress):
        self.sweep, self.bar = sweep, bar
        self.seen: dict[str, tuple[float, int]] = {}

    def poll(self) -> None:
        for r in self.sweep.runs:
            log = self.sweep.run_dir(r) / "log.csv"
            try:
                mtime = log.stat().st_mtime
            except FileNotFoundError:
                continue
            last = self.seen.get(r.name, (None, 0))
            if last[0] == mtime:
                continue
            try:   # a worker may be appending: a torn last line is left out
                rows = runstate.read_log(log, say=lambda m: None)[1]
            except CorruptFile:
                continue   # the run's worker reports it
            step = int(rows[-1]["step"]) if rows else 0
            if rows and step != last[1]:
                self.bar.update(r.name, step, r.train.total_steps, rows[-1])
            self.seen[r.name] = (mtime, step)


def follow(sweep: sw.Sweep, bar: sw.Progress, ended, poll_s: float = 1.0) -> None:
    """Show the workers' progress, read from the runs' logs, until ended() is true."""
    f = Follower(sweep, bar)
    while True:
        stop = ended()
        f.poll()
        if stop:
            return
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------
# Slurm
# --------------------------------------------------------------------------------------------

def _slurm_cmd(args: list[str]) -> str:
    """Output of a Slurm command; LaunchError with its first line when it fails."""
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise LaunchError(f"--launcher slurm needs Slurm's commands (sbatch, squeue, sinfo) on "
                          f"PATH; {args[0]} was not found") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"--launcher slurm: `{' '.join(args)}` did not answer in 30 s: is "
                          f"slurmctld reachable?") from None
    if p.returncode:
        lines = [ln for ln in (p.stderr or p.stdout).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "fatal" in ln or "error" in ln), lines[0] if lines else "")
        raise LaunchError(f"--launcher slurm: `{' '.join(args)}` failed: {first.strip()}")
    return p.stdout


def slurm_partitions() -> tuple[dict[str, int], str | None]:
    """{partition: nodes} of the cluster and its default partition (None when there is none)."""
    for tool in ("sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            raise LaunchError(f"--launcher slurm needs Slurm's commands (sbatch, squeue, sinfo) on "
                              f"PATH; {tool} was not found")
    parts: dict[str, int] = {}
    default = None
    for line in _slurm_cmd(["sinfo", "-h", "-o", "%P %D"]).splitlines():
        if not line.strip():
            continue
        name, nodes = line.split()[:2]
        if name.endswith("*"):
            name = name[:-1]
            default = name
        parts[name] = parts.get(name, 0) + int(nodes)
    return parts, default


def check_partition(partition: str | None) -> tuple[str, int]:
    """The partition to submit to and its node count; LaunchError when there is none such."""
    parts, default = slurm_partitions()
    listing = ", ".join(p + (" (default)" if p == default else "") for p in parts) or "none"
    if partition is None:
        if default is None:
            raise LaunchError(f"--launcher slurm: this cluster has no default partition; choose "
                              f"one with --partition: {listing}")
        partition = default
    if partition not in parts:
        raise LaunchError(f"--partition {partition}: no such partition; this cluster has: {listing}")
    return partition, parts[partition]


def filesystem_type(path: Path) -> tuple[str, str]:
    """(type, mount point) of the filesystem holding `path`, from /proc/mounts."""
    path = path.resolve()
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mnt = fields[1].replace("\\040", " ")
                if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, fields[2]
    except OSError:
        pass
    return kind, best or "/"


def submit_slurm(plan, out_dir, device: str, cfg: LaunchConfig, progress: bool = True,
                 fit: bool = True) -> tuple[Path, dict[str, str]]:
    """Submit every unfinished run that has no live job as one job array; return the folder and
    {run: job id}. With cfg.wait, follow the array until every run has ended, then merge the
    tables and fit (as run_local does); without, the command returns at once, and fits when it
    is run again with nothing left to train."""
    t0 = time.perf_counter()
    partition, nodes = check_partition(cfg.partition)
    sweep = sw.prepare_sweep(plan, out_dir, device, repair=cfg.repair)
    try:
        kind, mnt = filesystem_type(sweep.dir)
        if kind in LOCAL_FILESYSTEMS and nodes > 1:
            print(f"sixn scale: warning: {sweep.dir} is on a local filesystem ({kind} at {mnt}); "
                  f"the tasks on the other nodes of partition {partition} will not see it: put "
                  f"the sweep folder on a filesystem the nodes share (--out)", file=sys.stderr)
        live = live_jobs(sweep.dir)
        todo = [r for r in sweep.pending() if r.name not in live]
        submitted = _submit(sweep, todo, partition, device, cfg) if todo else {}
        if progress or not cfg.wait:
            msg = f"sixn scale: submitted {len(submitted)} run(s) to partition {partition}"
            if submitted:
                msg += f" as job {next(iter(submitted.values())).split('_')[0]}"
            if live:
                msg += (f"; {len(live)} run(s) already queued or running "
                        f"({', '.join(sorted(set(live.values())))})")
            if submitted or live:
                msg += (f"; follow with `sixn scale --status --out {sweep.dir}`; once every run is "
                        f"done, this command again (or --wait) makes the fits and plots")
            else:
                msg += "; every run is finished: tables, fits and plots follow"
            print(msg, file=sys.stderr)
        if cfg.wait:
            bar = sw.Progress({r.name: r.cost for r in sweep.runs}, enabled=progress)
            try:
                follow(sweep, bar, lambda: not live_jobs(sweep.dir))
            finally:
                bar.close()
        if cfg.wait or not (submitted or live):
            finish_sweep(sweep, fit, progress)
        if cfg.wait:
            record_launch(sweep, cfg, len(todo), todo, time.perf_counter() - t0)
    finally:
        sweep.release()
    return sweep.dir, submitted


def _submit(sweep: sw.Sweep, runs: list, partition: str, device: str,
            cfg: LaunchConfig) -> dict[str, str]:
    K = cfg.gpus_per_run
    ex = submitit.SlurmExecutor(folder=sweep.dir / "slurm" / "%j", max_num_timeout=3)
    params = {"partition": partition, "time": cfg.time_min, "nodes": 1, "ntasks_per_node": 1,
              "job_name": f"sixn-{sweep.dir.name}", "signal_delay_s": 60}
    if torch.device(device).type == "cuda":
        params["gpus_per_node"] = K
    else:
        params["cpus_per_task"] = K * (cfg.threads or 1)
    if cfg.account:
        params["account"] = cfg.account
    params["setup"] = [f"export SIXN_COMMAND={shlex.quote(command_line())}"]
    ex.update_parameters(**params)
    names = [r.name for r in runs]
    try:
        n = len(names)
        jobs = ex.map_array(SlurmTask(), [str(sweep.dir)] * n, names, [K] * n, [cfg.threads or 1] * n)
    except Exception as e:  # sbatch refused the array: its message is the useful part
        raise LaunchError(f"--launcher slurm: sbatch refused the job array: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from None
    path = sweep.dir / "slurm.json"
    book = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    book.pop("provenance", None)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = {}
    for name, job in zip(names, jobs):
        out[name] = str(job.job_id)
        book["runs"][name] = {"job_id": str(job.job_id), "partition": partition, "submitted": now,
                              "log": str(job.paths.stderr)}
    write_json(path, book, sweep.prov)
    return out


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job id (array tasks as ARRAY_TASK): squeue for queued and running
    jobs; jobs that left the queue are asked of scontrol (which remembers them for MinJobAge);
    absent: forgotten by Slurm."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    out: dict[str, str] = {}
    p = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T"],
                       capture_output=True, text=True, timeout=60)
    for line in p.stdout.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            out[jid.strip()] = state.strip()
    for j in job_ids:
        if j in out:
            continue
        q = subprocess.run(["scontrol", "show", "job", "-o", j], capture_output=True, text=True,
                           timeout=60)
        for tok in q.stdout.split():
            if tok.startswith("JobState="):
                out[j] = tok.split("=", 1)[1]
                break
    return out


LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
               "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


def live_jobs(sweep_dir: Path) -> dict[str, str]:
    """{run: job id} of the runs whose last submitted job is still queued or running."""
    path = Path(sweep_dir) / "slurm.json"
    if not path.exists():
        return {}
    book = json.loads(path.read_text()).get("runs", {})
    states = slurm_states([v["job_id"] for v in book.values()])
    return {name: v["job_id"] for name, v in book.items()
            if states.get(v["job_id"]) in LIVE_STATES and not sw.run_finished(Path(sweep_dir) / "runs" / name)}


def status_with_slurm(sweep_dir: Path, rows: list[dict]) -> list[dict]:
    """sweep_status rows with Slurm's view merged in: queued (pending in Slurm), running (claimed,
    or running in Slurm), and failed for a run whose job ended without finishing it."""
    ids = [r["slurm_job"] for r in rows if r.get("slurm_job")]
    states = slurm_states(ids) if ids else {}
    for r in rows:
        j = r.get("slurm_job")
        if not j:
            continue
        s = states.get(j)
        r["slurm_state"] = s
        if r["state"] in ("done", "early_stopped", "diverged", "running"):
            continue
        if s == "PENDING":
            r["state"] = "queued"
        elif s in LIVE_STATES:
            r["state"] = "running"
        elif r["state"] != "failed":
            r["state"] = "failed"
            r["error"] = (f"Slurm job {j} ended ({s or 'no longer known to Slurm'}) without "
                          f"finishing the run; see {Path(sweep_dir) / 'slurm'}")
    return rows
