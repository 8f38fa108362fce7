"""The processes that train a sweep's runs: local workers, the ranks of a data-parallel run under
torchrun, and Slurm array tasks. Each reads the sweep folder (scaling.sweep.load_sweep), claims a
run and trains or resumes it; none of them fits or plots (scaling.launch does, once).

  python -m sixn.scaling.workers worker SWEEP_DIR [--cpus 0] [--gpus-per-run K] [--threads 1]
  python -m torch.distributed.run --standalone --nproc_per_node K \\
      -m sixn.scaling.workers rank SWEEP_DIR RUN

A local worker pins itself to the CPU cores it is given and runs one torch thread per process
(its GPUs come from CUDA_VISIBLE_DEVICES, set by the launcher). On the CPU the launcher forks its
workers instead (forked_worker), which then share its loaded corpus; GPU workers run `worker`
above. With K > 1 it starts each run under torchrun; rank 0 claims the run, so the claim lives exactly as long as the processes that
train it, and scaling.train.World splits the global batch over the ranks (NCCL on GPUs, gloo on
the CPU, one core per rank).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import submitit
import torch

from . import sweep as sw
from .claims import CLAIM_FILE, try_claim
from .train import World

HELD_EXIT = 3   # a torchrun run found its run claimed by another worker
PR_SET_PDEATHSIG = 1   # prctl(2)


def die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when `parent` (the launcher) dies, even by SIGKILL,
    so that no worker goes on training for a launcher that is gone (Linux; elsewhere a no-op).
    A worker whose launcher died before this call ends at once."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        raise KeyboardInterrupt


def usable_cpus() -> list[int]:
    """The CPU cores this process may run on (its affinity mask)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def pin(cpus: list[int] | set[int]) -> None:
    """Run this process on `cpus` only (where the OS allows it)."""
    if cpus:
        try:
            os.sched_setaffinity(0, set(cpus))
        except (AttributeError, OSError):
            pass


def worker_main(sweep_dir: str, cpus: list[int], gpus_per_run: int, threads: int,
                deadline: float | None = None) -> int:
    """One local worker in a fresh interpreter: loads the sweep from its folder, then trains
    (train_runs)."""
    train_runs(sw.load_sweep(sweep_dir), cpus, gpus_per_run, threads, deadline)
    return 0


def train_runs(sweep: sw.Sweep, cpus: list[int], gpus_per_run: int, threads: int,
               deadline: float | None = None) -> None:
    """Pinned to `cpus` with `threads` torch threads, train the sweep's runs until none is left
    (sweep.work) or the deadline (time.time()) has passed; under torchrun when gpus_per_run > 1."""
    pin(cpus)
    torch.set_num_threads(threads)
    def under_torchrun(r: sw.RunSpec) -> str:
        return run_torchrun(sweep.dir, r.name, gpus_per_run, cpus, threads)
    sw.work(sweep, runner=under_torchrun if gpus_per_run > 1 else None, deadline=deadline)


def forked_worker(sweep: sw.Sweep, cpus: list[int], threads: int, parent: int,
                  deadline: float | None = None) -> None:
    """A CPU worker forked from the launcher (scaling.launch.ForkedWorker), which has `sweep` and
    its corpus loaded already (and the step FLOP counts it made, such as an IsoFLOP plan's): it
    starts training at once instead of importing torch and reading the corpus again (about 3 s
    on a 2-core machine, a tenth of a quick sweep). It drops its copy of the launcher's sweep
    lock (the launcher keeps its own), so that the lock goes with the launcher. Exits as a
    spawned worker does (main): 0, 130 when stopped, 2 on bad input."""
    def body() -> int:
        die_with_parent(parent)
        sweep.release()   # closes this process's descriptor only: the launcher still holds it
        train_runs(sweep, cpus, 1, threads, deadline)
        return 0
    sys.exit(_as_worker(body))


def _as_worker(body: Callable[[], int]) -> int:
    """body()'s exit status, with a terminated worker ending cleanly (SIGTERM is an interrupt:
    130) and bad input said in one line (2)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return body()
    except KeyboardInterrupt:
        return 130
    except ValueError as e:
        print(f"sixn scale: worker error: {e}", file=sys.stderr, flush=True)
        return 2


def run_torchrun(sweep_dir: Path, name: str, nproc: int, cpus: list[int], threads: int = 1) -> str:
    """Train one run with `nproc` processes under torchrun on this node; its state afterwards, or
    "held" when rank 0 found the run claimed by another worker."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "sixn.scaling.workers", "rank", str(sweep_dir), name]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["SIXN_RANK_CPUS"] = ",".join(map(str, cpus))
    rc = subprocess.run(cmd, env=env).returncode
    if rc == HELD_EXIT:
        return "held"
    return sw.run_status(Path(sweep_dir), name)["state"] if rc == 0 else "failed"


def rank_main(sweep_dir: str, name: str) -> int:
    """One rank of a data-parallel run (under torchrun): rank 0 claims the run, every rank trains
    its shard of the global batch, rank 0 writes the files and merges the tables."""
    import torch.distributed as dist
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    cpus = [int(c) for c in os.environ.get("SIXN_RANK_CPUS", "").split(",") if c]
    if cpus:
        pin({cpus[local % len(cpus)]})
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        world = World.current()
        sweep = sw.load_sweep(sweep_dir)
        run = next((r for r in sweep.runs if r.name == name), None)
        if run is None:
            raise ValueError(f"{sweep_dir}/sweep.json has no run {name}: the plan changed")
        c = try_claim(sweep.run_dir(run) / CLAIM_FILE, "train") if world.is_main else None
        ok = torch.tensor([int(c is not None and not sw.run_finished(sweep.run_dir(run)))],
                          device=torch.device("cuda", local) if cuda else "cpu")
        dist.broadcast(ok, 0)
        if not int(ok):
            return HELD_EXIT
        try:
            state = sw.train_run(sweep, run, world=world)
        finally:
            if c is not None:
                c.release()
        if world.is_main:
            sw.collect(sweep.dir, sweep.runs, sweep.prov)
        return 0 if state != "failed" else 1
    finally:
        dist.destroy_process_group()


class SlurmTask(submitit.helpers.Checkpointable):
    """What one Slurm array task runs: one run of the sweep, resumed from its checkpoint. Being
    Checkpointable, submitit requeues it (same arguments) when it is preempted or timed out."""

    def __call__(self, sweep_dir: str, name: str, gpus_per_run: int = 1, threads: int = 1) -> str:
        sd = Path(sweep_dir)
        if not (sd / "sweep.json").exists():
            raise RuntimeError(f"node {os.uname().nodename} cannot see {sd}/sweep.json: the sweep "
                               f"folder must be on a filesystem that every node shares")
        if gpus_per_run > 1:
            return run_torchrun(sd, name, gpus_per_run, usable_cpus(), threads)
        torch.set_num_threads(threads)
        sweep = sw.load_sweep(sd)
        sw.work(sweep, names=[name])
        return sw.run_status(sd, name)["state"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sixn.scaling.workers",
                                description="worker processes of `sixn scale` (started by it)")
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("worker", help="train the sweep's runs, one after another, beside the others")
    w.add_argument("sweep_dir")
    w.add_argument("--cpus", default="", help="comma-separated CPU cores to run on")
    w.add_argument("--gpus-per-run", type=int, default=1)
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--deadline", type=float, default=None, help="start no run after this time.time()")
    w.add_argument("--parent", type=int, default=None,
                   help="the launcher's pid: end when it dies")
    r = sub.add_parser("rank", help="one rank of a data-parallel run (under torchrun)")
    r.add_argument("sweep_dir")
    r.add_argument("run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        if args.what == "worker":
            if args.parent is not None:
                die_with_parent(args.parent)
            cpus = [int(c) for c in args.cpus.split(",") if c]
            return worker_main(args.sweep_dir, cpus, args.gpus_per_run, args.threads, args.deadline)
        return rank_main(args.sweep_dir, args.run)
    return _as_worker(body)


if __name__ == "__main__":
    sys.exit(main())
