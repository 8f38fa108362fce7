"""Results I/O: where every file under results/ came from, and the one reader and writer of tables.

Each JSON result carries a "provenance" object and each CSV row carries the same fields as columns:
device, driver, torch and triton versions, git commit, command line and UTC date. Every write
replaces its file in one rename (a kill leaves the old file or the new one); append_csv appends.
Tables are read and written through pandas (read_table / read_rows, write_csv / append_csv).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import numbers
import os
import platform
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from .errors import CorruptFile

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
    """The provenance fields. command: the sixn command line; by default $SIXN_COMMAND (set by
    scaling.launch for its worker processes: the command that started them), else sys.argv."""
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
        "command": command if command is not None else (
            os.environ.get("SIXN_COMMAND") or " ".join(["sixn", *sys.argv[1:]])),
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


def clean_stale_temps(folder: str | Path, max_age_s: float = 3600.0) -> list[Path]:
    """Remove the temporary files atomic_path leaves behind when a process is killed mid-write
    (`.<name>.<random>.tmp`) that are older than max_age_s (a live writer's are seconds old);
    returns those removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, gone = time.time(), []
    for p in folder.glob(".*.tmp"):
        try:
            if p.is_file() and now - p.stat().st_mtime > max_age_s:
                p.unlink()
                gone.append(p)
        except FileNotFoundError:  # another process removed it first
            continue
    return gone


def read_json(path: str | Path, *, what: str, remedy: str,
              required: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """A JSON object sixn wrote, checked: CorruptFile (naming the file, what is wrong and `remedy`)
    when it is not valid JSON, not an object, or lacks a `required` key of the given type(s).
    OSError (a missing or unreadable file) is left to the caller."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CorruptFile(path, f"{what} is not UTF-8 text", remedy) from None
    except json.JSONDecodeError as e:
        problem = ("is empty" if not raw.strip() else
                   f"is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})")
        raise CorruptFile(path, f"{what} {problem}", remedy) from None
    if not isinstance(obj, dict):
        raise CorruptFile(path, f"{what} is not a JSON object (it holds a {type(obj).__name__})",
                          remedy)
    for key, types in (required or {}).items():
        if key not in obj:
            raise CorruptFile(path, f"{what} has no {key!r} entry", remedy)
        v = obj[key]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in _as_tuple(types))
        if not ok:
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            raise CorruptFile(path, f"{what}: {key!r} should be {names}, it is {v!r:.60}", remedy)
    return obj


def _as_tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


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


def fmt_number(v: Any, spec: str = ".4g", missing: str = "-", scale: float = 1.0) -> str:
    """The one number formatter of the printed tables: format(v * scale, spec), or `missing` when v
    is None, empty or not finite."""
    if v is None or isinstance(v, str) and v == "":
        return missing
    if isinstance(v, numbers.Real) and not math.isfinite(v):
        return missing
    return format(v * scale, spec)


# --------------------------------------------------------------------------------------------
# Tables: the one CSV reader and the one writer (pandas)
# --------------------------------------------------------------------------------------------

def read_table(path: str | Path, text: bool = False) -> pd.DataFrame:
    """A CSV as a DataFrame; empty when the file does not exist or is empty.

    Columns are typed by pandas with nullable dtypes (an integer column with empty cells stays
    integer); the provenance columns always stay text. With text=True every cell is kept as it is
    written (str, '' for empty), for callers that compare cells as text or check them one by one.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return _parse_table(path, text)


def parse_table(text: str, as_text: bool = False) -> pd.DataFrame:
    """A CSV held in a string, typed as read_table types a file."""
    return _parse_table(io.StringIO(text), as_text)


def _parse_table(source, text: bool) -> pd.DataFrame:
    try:
        if text:
            return pd.read_csv(source, dtype=str, keep_default_na=False)
        return pd.read_csv(source, dtype={k: str for k in PROVENANCE_FIELDS},
                           dtype_backend="numpy_nullable")
    except pd.errors.EmptyDataError:  # blank lines only
        return pd.DataFrame()


def records(df: pd.DataFrame) -> list[dict]:
    """A DataFrame's rows as dicts of plain Python values (int, float, bool, str; None where empty)."""
    if df.empty:
        return []
    obj = df.astype(object)
    return obj.where(df.notna(), None).to_dict("records")


def read_rows(path: str | Path, text: bool = False) -> list[dict]:
    """A CSV's rows as dicts (see read_table for the types); [] when the file does not exist."""
    return records(read_table(path, text=text))


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV, typed as read_rows; ([], []) when the file does not exist."""
    df = read_table(path)
    return [str(c) for c in df.columns], records(df)


def _csv_text(fieldnames: list[str], rows: list[dict], header: bool = True) -> str:
    # object dtype: every cell is written as str(value) (None as empty), as it was given
    df = pd.DataFrame([{k: r.get(k) for k in fieldnames} for r in rows], columns=fieldnames,
                      dtype=object)
    return df.to_csv(index=False, header=header, lineterminator="\n")


def write_csv_rows(path: str | Path, fieldnames: list[str], rows: list[dict]) -> Path:
    """Rows written atomically as they are (they already carry their provenance columns); keys not
    in `fieldnames` are left out, missing ones are empty."""
    return atomic_write_text(path, _csv_text(list(fieldnames), rows))


def _with_provenance(rows: Iterable[dict], prov: dict | None) -> list[dict]:
    prov = prov or provenance()
    return [{**r, **{k: prov[k] for k in PROVENANCE_FIELDS}} for r in rows]


def _fields(rows: list[dict], first: Iterable[str] = ()) -> list[str]:
    fields = list(first)
    for r in rows:
        fields += [k for k in r if k not in fields]
    return fields


def _header(path: Path) -> list[str]:
    """The column names of a CSV (its first line only); [] when it does not exist or is empty."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except pd.errors.EmptyDataError:
        return []


def append_csv(path: str | Path, rows: Iterable[dict], prov: dict | None = None) -> Path:
    """Append rows to a CSV, each with the provenance columns.

    A new file is written with a header. Rows whose columns the file's header already has are
    appended in one write (nothing else of the file is read or rewritten); rows that bring new
    columns rewrite the file once, atomically, with the header grown by them.
    """
    path = Path(path)
    new = _with_provenance(rows, prov)
    if not new:
        return path
    header = _header(path)
    if not header:
        return write_csv_rows(path, _fields(new), new)
    fields = _fields(new, header)
    if len(fields) > len(header):
        _, old = read_csv_rows(path)
        return write_csv_rows(path, fields, old + new)
    text = _csv_text(header, new, header=False)
    with open(path, "rb+") as f:  # a file torn without its last newline gets one first
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode())
        f.flush()
        os.fsync(f.fileno())
    return path


def write_csv(path: str | Path, rows: list[dict], prov: dict | None = None) -> Path:
    """Write (replace, atomically) a CSV whose every row carries the provenance columns."""
    new = _with_provenance(rows, prov)
    return write_csv_rows(path, _fields(new), new)
