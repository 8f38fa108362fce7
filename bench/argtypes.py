"""argparse `type=` validators shared by the sixn subcommands.

Each one turns a command-line string into a checked value or raises argparse.ArgumentTypeError with
one sentence saying what was wrong and what is accepted; argparse then prints
`sixn X: error: argument --flag: <sentence>` and the command exits 2 before any work starts.

Checks that need the file system (files to read, folders to write) look at the path as it is when
the command starts; a later failure (a disk that fills up, a folder removed meanwhile) is an
OSError, which bench.cli turns into the same kind of one-line error.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
from pathlib import Path

import torch

# The largest value a seed may take: numpy's and torch's generators accept [0, 2**32).
MAX_SEED = 2 ** 32 - 1


def _int(s: str, what: str) -> int:
    try:
        return int(s, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None


def positive_int(s: str) -> int:
    """An integer >= 1."""
    v = _int(s, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {s!r}")
    return v


def nonneg_int(s: str) -> int:
    """An integer >= 0."""
    v = _int(s, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s!r}")
    return v


def seed(s: str) -> int:
    """A random seed: an integer in [0, 2**32 - 1]."""
    v = _int(s, f"an integer seed in [0, {MAX_SEED}]")
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be an integer in [0, {MAX_SEED}], got {s!r}")
    return v


def positive_float(s: str) -> float:
    """A finite number > 0."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s!r}")
    return v


def device(*kinds: str, auto: bool = False):
    """A validator for a torch device of one of `kinds` ("cpu", "cuda", "meta"), e.g.
    device("cpu", "cuda", auto=True). "cuda" and "cuda:N" need a visible GPU (and N below the
    count); "auto" (when allowed) is returned as is for the command to resolve."""
    names = (["auto"] if auto else []) + [k + ("[:N]" if k == "cuda" else "") for k in kinds]
    supported = ", ".join(names)

    def parse(s: str) -> str:
        if auto and s == "auto":
            return s
        try:
            dev = torch.device(s)
        except (RuntimeError, ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"unknown device {s!r}; supported: {supported}") from None
        if dev.type not in kinds:
            raise argparse.ArgumentTypeError(f"device {s!r} is not supported here; supported: {supported}")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                other = ", ".join(k for k in ((["auto"] if auto else []) + list(kinds)) if k != "cuda")
                raise argparse.ArgumentTypeError(
                    f"device {s!r}: torch sees no CUDA GPU on this machine"
                    + (f"; use {other}" if other else ""))
            n = torch.cuda.device_count()
            if dev.index is not None and dev.index >= n:
                raise argparse.ArgumentTypeError(
                    f"device {s!r}: torch sees {n} GPU(s), cuda:0 to cuda:{n - 1}")
        return s
    parse.__name__ = "device"
    return parse


def readable_file(s: str) -> Path:
    """An existing regular file that this process can read."""
    p = Path(s).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{s}: no such file")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{s} is a folder; give a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{s} is not a regular file")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{s}: permission denied (not readable)")
    return p


def readable_source(s: str) -> str:
    """A file or folder that exists and can be read, or a glob pattern that matches something.
    (The corpus loaders resolve the pattern; here it is only checked.)"""
    if any(c in s for c in "*?["):
        if not glob.glob(os.path.expanduser(s), recursive=True):
            raise argparse.ArgumentTypeError(f"{s}: the pattern matches no file")
        return s
    p = Path(s).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{s}: no such file or folder")
    if not os.access(p, os.R_OK) or (p.is_dir() and not os.access(p, os.X_OK)):
        raise argparse.ArgumentTypeError(f"{s}: permission denied (not readable)")
    return s


def _nearest_existing(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(d: Path) -> bool:
    """Whether a file can be created in folder d (tried, not guessed: os.access says yes to root
    on a read-only file system)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".sixn-write-check.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def output_dir(s: str) -> Path:
    """A folder to write into: an existing writable folder, or a path whose nearest existing
    ancestor is a writable folder (it is created when the command writes)."""
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise argparse.ArgumentTypeError(f"{s} exists and is not a folder; give a folder "
                                             f"(it is created when missing)")
        if not _writable_dir(p):
            raise argparse.ArgumentTypeError(f"{s}: the folder is not writable")
        return p
    base = _nearest_existing(p)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{s}: cannot create the folder, {base} is a file")
    if not _writable_dir(base):
        raise argparse.ArgumentTypeError(f"{s}: cannot create the folder, {base} is not writable")
    return p


def output_file(s: str) -> Path:
    """A file to write: not a folder, in a folder that exists or can be created and is writable."""
    p = Path(s).expanduser()
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{s} is a folder; give a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{s}: the file is not writable")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{s}: cannot create it, {base} is a file")
    if not _writable_dir(base):
        raise argparse.ArgumentTypeError(f"{s}: cannot write there, {base} is not writable")
    return p
