"""A run's files read back and checked: log.csv, ckpt.pt, config.json, done.json, diverged.json.

A run folder is only ever written by sixn, each file atomically (temporary file + rename) except
log.csv, which grows by appends. So what a kill can leave is known: an old or a new version of
each file, stale temporary files, and in log.csv a last line cut off mid-write. Anything else is
damage done from outside (a truncated or edited file, a disk error, two trainers in one folder),
and reading it as data would silently change the fits. The rules:

- log.csv: a last line without its newline (or with fewer fields than the header) is a torn
  append: it is dropped with a notice on stderr (and the file rewritten without it by the
  trainer). Any other problem is CorruptFile: text that is not UTF-8 or not CSV, a header without
  the columns sixn writes, a row whose step, tokens or val_loss is not a valid number, steps that
  do not increase (rows repeated: two trainers), or evaluations missing before the step the
  checkpoint or done.json says the run reached (a file cut short or edited).
- ckpt.pt: loaded with torch.load(weights_only=True) (the format holds tensors, dicts, lists and
  numbers only); a file that does not load, lacks an entry, holds the wrong type, a step outside
  the run's schedule or a model of another shape is CorruptFile.
- config.json, done.json, diverged.json: valid JSON objects with the entries sixn writes, of the
  right types (CorruptFile otherwise).

Every CorruptFile names the file, what is wrong and what to do: rerun with --repair, which sets the
run's files aside in <run>/corrupt-<UTC time>/ (nothing is deleted) and trains that run again from
step 0.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Callable

import torch

from sixn.bench.errors import CorruptFile
from sixn.bench.results import parse_table, read_json, records

REPAIR = ("rerun the same command with --repair to set this run's files aside and train it again "
          "from step 0")
RUN_FILES = ("config.json", "log.csv", "ckpt.pt", "done.json", "diverged.json")
LOG_REQUIRED = ("run", "step", "tokens", "val_loss")
DONE_STATUSES = ("done", "early_stopped")
NUMBER = (int, float)


def notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# log.csv
# --------------------------------------------------------------------------------------------

def _int(v) -> int | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def _finite(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _row_problem(r: dict) -> str | None:
    step, tokens, val = _int(r.get("step")), _int(r.get("tokens")), _finite(r.get("val_loss"))
    if step is None or step < 1:
        return f"step {r.get('step')!r} is not a positive integer"
    if tokens is None or tokens < 0:
        return f"tokens {r.get('tokens')!r} is not an integer >= 0"
    if val is None or val < 0:
        return f"val_loss {r.get('val_loss')!r} is not a finite number >= 0"
    return None


def _fields_in(line: str) -> int:
    try:
        return len(next(csv.reader([line])))
    except (csv.Error, StopIteration):
        return 0


def _text_and_torn_tail(path: Path) -> tuple[str, str]:
    """The log's text without a torn last line, and that line ('' when there is none)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFile(path, f"the log is not UTF-8 text (byte {e.start})", REPAIR) from None
    lines = text.splitlines(keepends=True)
    torn = bool(lines) and not lines[-1].endswith("\n")
    if not torn and len(lines) > 1:  # a complete-looking last line with fewer fields than the header
        torn = 0 < _fields_in(lines[-1]) < _fields_in(lines[0])
    return ("".join(lines[:-1]), lines[-1]) if torn else (text, "")


def has_torn_tail(path: str | Path) -> bool:
    """Whether log.csv ends in a torn line (which read_log drops)."""
    path = Path(path)
    return path.exists() and bool(_text_and_torn_tail(path)[1])


def read_log(path: str | Path, *, say: Callable[[str], None] = notice) -> tuple[list[str], list[dict]]:
    """(header, rows) of a run's log.csv, checked (see the module doc); ([], []) when there is
    none. A torn last line is dropped with a notice (the file is left as it is: the run's trainer
    rewrites it once its state has been checked, see drop_torn_tail)."""
    path = Path(path)
    if not path.exists():
        return [], []
    text, cut = _text_and_torn_tail(path)
    if cut:
        say(f"{path}: dropped a torn last line ({len(cut)} bytes, a write cut off by a kill)")
    if not text.strip():
        return [], []
    try:
        widths = [len(fields) for fields in csv.reader(io.StringIO(text)) if fields]
    except csv.Error as e:
        raise CorruptFile(path, f"the log is not a readable CSV table ({e})", REPAIR) from None
    for i, w in enumerate(widths[1:], start=2):
        if w != widths[0]:
            raise CorruptFile(path, f"line {i} has {w} fields, the header {widths[0]} (the log is "
                                    f"not a readable CSV table)", REPAIR)
    try:
        df = parse_table(text)
    except (ValueError, csv.Error) as e:  # pandas' ParserError is a ValueError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptFile(path, f"the log is not a readable CSV table ({first})", REPAIR) from None
    header = [str(c) for c in df.columns]
    missing = [c for c in LOG_REQUIRED if c not in header]
    if missing:
        raise CorruptFile(path, f"the log's header lacks the column(s) {', '.join(missing)} "
                                f"(a cut-off or foreign header: {','.join(header)[:80]!r})", REPAIR)
    rows = records(df)
    last = 0
    for i, r in enumerate(rows, start=2):
        problem = _row_problem(r)
        if problem:
            raise CorruptFile(path, f"line {i}: {problem}", REPAIR)
        step = _int(r["step"])
        if step <= last:
            raise CorruptFile(path, f"line {i}: step {step} after step {last}: the rows are repeated "
                                    f"or out of order (two trainers wrote this log, or it was edited)",
                              REPAIR)
        last = step
    return header, rows


def eval_steps(eval_interval: int, total_steps: int, upto: int) -> list[int]:
    """The steps a run evaluates at (every eval_interval steps and at its last step), up to
    `upto`."""
    steps = list(range(eval_interval, upto + 1, eval_interval))
    if upto == total_steps and upto % eval_interval:
        steps.append(upto)
    return steps


def check_log_steps(path: str | Path, rows: list[dict], eval_interval: int, total_steps: int,
                    upto: int, source: str) -> None:
    """The rows up to step `upto` (what `source`, the checkpoint or done.json, says the run
    reached) must be exactly the run's evaluations: CorruptFile when some are missing."""
    have = [_int(r["step"]) for r in rows if _int(r["step"]) <= upto]
    want = eval_steps(eval_interval, total_steps, upto)
    if have != want:
        gone = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        what = (f"the evaluations at step(s) {_steps(gone)} are missing" if gone else
                f"it has rows at step(s) {_steps(extra)} where the run does not evaluate")
        raise CorruptFile(path, f"{source} says the run reached step {upto}, but {what} "
                                f"(the log was cut short or edited)", REPAIR)


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps[:6])) + (f" and {len(steps) - 6} more" if len(steps) > 6 else "")


# --------------------------------------------------------------------------------------------
# ckpt.pt
# --------------------------------------------------------------------------------------------

CKPT_ENTRIES: dict[str, type | tuple[type, ...]] = {
    "model": dict, "optim": dict, "step": int, "gen_state": torch.Tensor,
    "torch_rng": torch.Tensor, "noise": dict, "elapsed_s": NUMBER, "best_val": NUMBER,
    "bad_evals": int,
}


def load_checkpoint(path: str | Path, total_steps: int | None = None) -> dict:
    """A run's checkpoint, loaded with weights_only=True and checked (see the module doc)."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CorruptFile(path, "the checkpoint holds objects a weights-only load refuses (it was "
                                    "not written by sixn's trainer)", REPAIR) from None
        raise CorruptFile(path, "the checkpoint cannot be read (not a checkpoint, or damaged)",
                          REPAIR) from None
    except (RuntimeError, EOFError, ValueError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise CorruptFile(path, f"the checkpoint cannot be read ({first})", REPAIR) from None
    if not isinstance(ck, dict):
        raise CorruptFile(path, f"the checkpoint holds a {type(ck).__name__}, not a dict", REPAIR)
    for key, types in CKPT_ENTRIES.items():
        if key not in ck:
            raise CorruptFile(path, f"the checkpoint has no {key!r} entry", REPAIR)
        if not isinstance(ck[key], types) or (types is int and isinstance(ck[key], bool)):
            raise CorruptFile(path, f"the checkpoint's {key!r} is a {type(ck[key]).__name__}", REPAIR)
    if ck["step"] < 0 or (total_steps is not None and ck["step"] > total_steps):
        raise CorruptFile(path, f"the checkpoint's step {ck['step']} is outside the run's schedule "
                                f"(0 to {total_steps})", REPAIR)
    return ck


def restore(path: str | Path, what: str, load: Callable[[], None]) -> None:
    """Run `load` (a load_state_dict or set_state call), turning a mismatch into CorruptFile."""
    try:
        load()
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CorruptFile(path, f"the checkpoint's {what} does not fit this run ({first})",
                          REPAIR) from None


# --------------------------------------------------------------------------------------------
# JSON files
# --------------------------------------------------------------------------------------------

def read_config(path: str | Path) -> dict:
    return read_json(path, what="the run's configuration", remedy=REPAIR,
                     required={"run": str, "kind": str, "model": dict, "train": dict})


def read_done(path: str | Path) -> dict:
    d = read_json(path, what="the run's summary", remedy=REPAIR,
                  required={"run": str, "steps": int, "D": NUMBER, "val_loss": NUMBER,
                            "status": str})
    if d["status"] not in DONE_STATUSES:
        raise CorruptFile(path, f"the run's summary has status {d['status']!r}, not one of "
                                f"{', '.join(DONE_STATUSES)}", REPAIR)
    if not math.isfinite(d["val_loss"]) or d["steps"] < 1:
        raise CorruptFile(path, f"the run's summary has steps {d['steps']} and val_loss "
                                f"{d['val_loss']}", REPAIR)
    return d


def read_diverged(path: str | Path) -> dict:
    return read_json(path, what="the run's divergence record", remedy=REPAIR,
                     required={"run": str, "step": int, "message": str})


def finished_state(run_dir: str | Path, eval_interval: int, total_steps: int) -> str | None:
    """'done' (done.json, checked against log.csv), 'diverged' (diverged.json) or None (the run
    still has to train); CorruptFile when those files are damaged."""
    run_dir = Path(run_dir)
    done = run_dir / "done.json"
    if done.exists():
        d = read_done(done)
        _, rows = read_log(run_dir / "log.csv")
        check_log_steps(run_dir / "log.csv", rows, eval_interval, total_steps, d["steps"],
                        "done.json")
        if not rows or _int(rows[-1]["step"]) != d["steps"]:
            raise CorruptFile(run_dir / "log.csv", f"the log goes past the step done.json ends at "
                                                   f"({d['steps']})", REPAIR)
        return "done"
    if (run_dir / "diverged.json").exists():
        read_diverged(run_dir / "diverged.json")
        return "diverged"
    return None


def check_run(run_dir: str | Path, eval_interval: int, total_steps: int) -> str:
    """Read every file of a run folder back and check it (CorruptFile on damage); the run's
    state: 'done', 'diverged', 'partial' (a checkpoint to resume from) or 'new'."""
    run_dir = Path(run_dir)
    state = finished_state(run_dir, eval_interval, total_steps)
    if state is not None:
        return state
    if (run_dir / "config.json").exists():
        read_config(run_dir / "config.json")
    _, rows = read_log(run_dir / "log.csv", say=lambda m: None)
    ckpt = run_dir / "ckpt.pt"
    if not ckpt.exists():
        return "new"
    step = load_checkpoint(ckpt, total_steps)["step"]
    check_log_steps(run_dir / "log.csv", rows, eval_interval, total_steps, step,
                    "the checkpoint (ckpt.pt)")
    return "partial"


# --------------------------------------------------------------------------------------------
# --repair
# --------------------------------------------------------------------------------------------

def set_aside(run_dir: str | Path, reason: str, say: Callable[[str], None] = notice) -> Path | None:
    """Move the run's files into <run>/corrupt-<UTC time>/ (with reason.txt), so that the run
    trains again from step 0; nothing is deleted. Returns that folder (None: nothing to move)."""
    run_dir = Path(run_dir)
    present = [run_dir / f for f in RUN_FILES if (run_dir / f).exists()]
    if not present:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = run_dir / f"corrupt-{stamp}"
    dest.mkdir()
    (dest / "reason.txt").write_text(reason + "\n")
    for p in present:
        shutil.move(str(p), str(dest / p.name))
    say(f"--repair: moved {', '.join(p.name for p in present)} of {run_dir} to {dest.name}/ "
        f"({reason}); the run trains again from step 0")
    return dest
