"""How every file under results/ records where it came from, and atomic writers for them.

Each JSON result carries a "provenance" object and each CSV row carries the same fields as columns:
device, driver, torch and triton versions, git commit, command line and UTC date.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import torch

PROVENANCE_FIELDS = ("device", "driver", "torch", "triton", "python", "git_commit", "command", "date")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def results_root() -> Path:
    """results/ of the checkout (overridable with SIXN_RESULTS for tests and installs elsewhere)."""
    return Path(os.environ.get("SIXN_RESULTS", repo_root() / "results"))


@lru_cache(maxsize=None)
def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                             text=True, timeout=10).stdout.strip()
        # results/ is output, not code: rewriting a committed result does not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"],
                               cwd=repo_root(), capture_output=True, text=True, timeout=10).stdout
        return (sha + ("-dirty" if dirty.strip() else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str | torch.device | None = None) -> str:
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(device: str | torch.device | None = None) -> str:
    """A folder-safe name for the device: 'cpu' or e.g. 'nvidia-h100-80gb-hbm3'."""
    dev = torch.device(device) if device is not None else (
        torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if dev.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(dev).lower()
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


@lru_cache(maxsize=None)
def driver_version() -> str:
    if not torch.cuda.is_available():
        return "none (CPU)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        return f"{out.splitlines()[0]} (CUDA {torch.version.cuda})" if out else f"CUDA {torch.version.cuda}"
    except (OSError, subprocess.SubprocessError, IndexError):
        return f"CUDA {torch.version.cuda}"


def provenance(device: str | torch.device | None = None, command: str | None = None) -> dict[str, str]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return {
        "device": device_name(device),
        "driver": driver_version(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "command": command if command is not None else " ".join(["sixn", *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; when the block ends without an error it replaces `path`
    in one rename, so a kill leaves the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary readable files
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file atomically (see atomic_path)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | Path, obj: Any, prov: dict | None = None) -> Path:
    """JSON with a "provenance" key (added when obj is a dict and has none)."""
    if isinstance(obj, dict) and "provenance" not in obj:
        obj = {**obj, "provenance": prov or provenance()}
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV; ([], []) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_csv_rows(path: str | Path, fieldnames: list[str], rows: list[dict]) -> Path:
    """Rows written atomically as they are (they already carry their provenance columns)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def append_csv(path: str | Path, rows: Iterable[dict], prov: dict | None = None) -> Path:
    """Append rows to a CSV, each with the provenance columns. New columns rewrite the header."""
    prov = prov or provenance()
    new = [{**r, **{k: prov[k] for k in PROVENANCE_FIELDS}} for r in rows]
    fields, old = read_csv_rows(path)
    for r in new:
        for k in r:
            if k not in fields:
                fields.append(k)
    return write_csv_rows(path, fields, old + new)


def write_csv(path: str | Path, rows: list[dict], prov: dict | None = None) -> Path:
    """Write (replace) a CSV whose every row carries the provenance columns."""
    path = Path(path)
    if path.exists():
        path.unlink()
    return append_csv(path, rows, prov)
