"""Claims: an OS-level lock per run, per sweep and per sweep table, so that parallel workers never
train one run twice, two commands never drive one sweep at once and concurrent finishers merge
the tables one after the other.

A claim is fcntl.flock(LOCK_EX) on a lock file (runs/<run>/claim.lock, sweep.lock, tables.lock).
The kernel releases it when the holding process ends for any reason, SIGKILL included, so a killed
worker's run is free again at once and the next worker resumes it from its checkpoint: there is no
stale claim to detect or expire. The holder writes who it is (host, pid, Slurm job, command, since)
into the lock file; that text is only read back for messages and `sixn scale --status` (a free
lock's text names its last holder and means nothing).

flock is per open file: two claims on one file conflict even inside one process, which is what the
tests use. Across the nodes of a cluster it needs a shared filesystem whose locks are coherent:
NFS (the Linux client maps flock to byte-range locks held by the server) or Lustre mounted with
`-o flock`. Windows has no fcntl; the claims are POSIX only.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CLAIM_FILE = "claim.lock"     # in a run's folder
SWEEP_LOCK = "sweep.lock"     # in the sweep folder: the command that drives the sweep
TABLES_LOCK = "tables.lock"   # in the sweep folder: whoever rewrites curves.csv / summary.csv


def whoami(role: str = "") -> dict:
    """What a holder writes into its lock file: host, pid, Slurm job, role, the sixn command it
    works for ($SIXN_COMMAND in a launcher's worker processes) and since when."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job and "SLURM_ARRAY_TASK_ID" in os.environ \
        else os.environ.get("SLURM_JOB_ID")
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": job, "role": role,
            "command": os.environ.get("SIXN_COMMAND") or " ".join(["sixn", *sys.argv[1:]]),
            "since": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def describe(info: dict | None) -> str:
    """'pid 123 on host vm (Slurm job 45_2) since ...' for messages."""
    if not info:
        return "another process"
    s = f"pid {info.get('pid')} on host {info.get('host')}"
    if info.get("slurm_job"):
        s += f" (Slurm job {info['slurm_job']})"
    if info.get("since"):
        s += f" since {info['since']}"
    return s


@dataclass
class Claim:
    """A held lock; release() (or leaving a `with` block, or the process ending) frees it."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor of the open file drops the flock
            self.fd = -1

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _write_holder(fd: int, info: dict) -> None:
    text = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)


def try_claim(path: str | Path, role: str = "") -> Claim | None:
    """The lock at `path` if it is free now, else None (never waits)."""
    path = Path(path)
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    _write_holder(fd, whoami(role))
    return Claim(path, fd)


def claim(path: str | Path, role: str = "", timeout: float | None = None,
          poll: float = 0.2) -> Claim | None:
    """The lock at `path`, waiting for it: for ever (timeout None), else up to `timeout` seconds
    (None when it stayed held)."""
    path = Path(path)
    if timeout is None:
        fd = _open(path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _write_holder(fd, whoami(role))
        return Claim(path, fd)
    end = time.monotonic() + timeout
    while True:
        c = try_claim(path, role)
        if c is not None or time.monotonic() >= end:
            return c
        time.sleep(poll)


def holder(path: str | Path) -> dict | None:
    """Who holds the lock at `path` now ({} when the holder wrote nothing yet), None when free.

    The probe takes a shared lock for an instant: a worker that tries to claim at that very moment
    sees the run as held and comes back to it later."""
    path = Path(path)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                return {}
        return None
    finally:
        os.close(fd)
