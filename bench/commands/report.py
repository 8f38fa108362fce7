"""`sixn report`: the main job. Check the kernels, benchmark this device, check C = 6N against
counted FLOPs, train a ladder of models and fit scaling laws, and write it all into one folder a
person can read.

Stages, in priority order, each a real sixn command whose console output is kept in
logs/<stage>.log:
  1. flops     `sixn flops --json` for the reference shapes (analytic accounting, Kaplan's Table 1)
  2. check     GPU: `sixn kernels --check`, the kernels' forward and backward against float64
               PyTorch (bf16, fp16, fp32) on awkward shapes
  3. kernels   GPU: `sixn kernels`, kernel TFLOP/s against SDPA's flash, cuDNN and memory-efficient
               backends and eager PyTorch (a short grid under a budget)
  4. bench     `sixn bench`: measured roofs, training-step tokens/s, MFU and HFU per provider (on a
               GPU under a budget: gpt2-small against eager and torch.compile baselines)
  5. validate  `sixn validate`: a step's executed FLOPs counted over a grid of shapes against 6N,
               6N + context and full_model: Nsight Compute on a GPU (its raw CSVs and the GEMM
               self-check kept), falling back to the dispatcher count, and saying so, where ncu is
               missing or cannot read counters; on the CPU the dispatcher and the Triton kernels
               counted block product by block product in the Triton interpreter
  6. scaling   `sixn scale`: a ladder of model sizes, then the fits and plots
Then report.md (bench.report_md): every number read from a CSV/JSON in the folder.

--budget SECONDS sizes the job to a wall-clock budget, counted from the start of the process. Each
stage gets a cap (a share of the budget, in priority order; the scaling ladder gets what is left)
and sizes its own work to it (--time-budget of each command: no new case after its time); on a
GPU each stage also runs in its own process, stopped at its cap, so a hung kernel or profiler
cannot take the budget. Every command writes each result the moment it exists, so a stopped
stage keeps what it finished. --pack FILE.tgz re-packs the whole folder after every stage.
--dry-run prints the plan (stages, caps, commands) and exits; it needs no GPU (--device cuda plans
for one). --quick is a budget too (QUICK_BUDGET_S). Without --budget or --quick the full job runs
with no caps, as before.

The folder is results/report-<device>-<date>[-quick]/ (--out to move it). A stage that finished is
skipped when the command is run again (the scaling sweep also resumes a run cut off midway), so an
interrupted report continues where it stopped; --restart starts over. A stage kept from an
earlier run of another commit or plan is named stale in report.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sixn.bench import argtypes, cli
from sixn.bench.cli import CLIError
from sixn.bench.errors import CorruptFile
from sixn.bench.counters import ncu
from sixn.bench.step import TIME_BUDGET_SPENT
from sixn.bench.report_md import Figures, format_value, lookup, write_report  # noqa: F401  (re-exported)
from sixn.bench.results import (clean_stale_temps, device_slug, provenance, read_json, results_root,
                               write_json)

STAGES = ("flops", "check", "kernels", "bench", "validate", "scaling")
GPU_ONLY = ("check", "kernels")
FLOPS_PRESETS = ("gpt2-small", "gpt2-medium", "tiny")
QUICK_BUDGET_S = {"cpu": 150.0, "cuda": 480.0}
PACK_EXCLUDE_SUFFIXES = (".pt", ".pth", ".ckpt", ".ncu-rep")  # checkpoints, ncu binaries


# --------------------------------------------------------------------------------------------
# The plan: which stages, with which cap, running which commands
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Share:
    """How a stage shares a budget: a fraction of it (None: what is left, for the last stage) and
    the least time it needs to be worth starting."""
    fraction: float | None
    min_s: float


# On a GPU each stage is its own process: its cap includes Python's and CUDA's start.
GPU_SHARES = {"flops": Share(0.03, 5), "check": Share(0.12, 30), "kernels": Share(0.19, 45),
              "bench": Share(0.25, 60), "validate": Share(0.19, 40), "scaling": Share(None, 40)}
CPU_SHARES = {"flops": Share(0.03, 2), "bench": Share(0.13, 8), "validate": Share(0.20, 10),
              "scaling": Share(None, 20)}
RESERVE_S = {"cuda": 15.0, "cpu": 6.0}    # report.md, figures, the pack, the process's exit
STARTUP_S = {"cuda": 12.0, "cpu": 0.0}    # a stage process's imports and CUDA start
# A command's own wrap-up after its last case starts (that case, plots, fits), by stage.
TAIL_S = {"flops": 0.0, "check": 10.0, "kernels": 15.0, "bench": 10.0, "validate": 5.0, "scaling": 15.0}


@dataclass
class StagePlan:
    name: str
    cap_s: float | None                  # None: no cap (the full job)
    isolated: bool                       # its own process, stopped at the cap
    commands: list[list[str]] = field(default_factory=list)
    skip: str | None = None              # why it does not run
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "cap_s": None if self.cap_s is None else round(self.cap_s, 1),
                "isolated": self.isolated, "commands": [" ".join(["sixn", *c]) for c in self.commands],
                "skip": self.skip, "notes": self.notes}


def _budget_flag(seconds: float | None, device: str, stage: str, parts: int = 1) -> list[str]:
    """--time-budget for each of a stage's `parts` commands given `seconds` of stage cap: what is
    left after the stage process starts and before the command's own wrap-up."""
    if seconds is None:
        return []
    each = (seconds - parts * (STARTUP_S[device] + TAIL_S[stage])) / parts
    return ["--time-budget", f"{max(1.0, each):.0f}"]


def stage_commands(name: str, folder: Path, device: str, cap: float | None, quick: bool,
                   counter: str) -> list[list[str]]:
    """The sixn commands of one stage (argv after `sixn`), sized for `cap` seconds (None: full)."""
    budgeted = cap is not None
    tb = _budget_flag(cap, device, name)
    gpu = device == "cuda"
    if name == "flops":
        return [["flops", "--preset", p, "--json"] for p in FLOPS_PRESETS]
    if name == "check":
        return [["kernels", "--check", "--out", str(folder / "kernels"), *tb]]
    if name == "kernels":
        grid = (["--quick", "--causal", "causal", "--seq-len", "1024", "--seq-len", "4096",
                 "--mlp-d-model", "768", "--mlp-d-model", "1600", "--rep-ms", "50"] if budgeted
                else ["--quick"])
        return [["kernels", *grid, "--out", str(folder / "kernels"), *tb]]
    if name == "bench":
        out = ["--out", str(folder / "bench")]
        if gpu and budgeted:
            return [["bench", "--device", "cuda", "--preset", "gpt2-small", "--provider", "triton",
                     "--provider", "torch-sdpa-eager", "--provider", "torch-sdpa-compile",
                     "--steps", "10", "--warmup", "3", *out, *tb]]
        if gpu:
            return [["bench", "--device", "cuda", *out]]
        if budgeted or quick:
            return [["bench", "--device", "cpu", "--preset", "tiny", "--steps", "3", "--warmup", "1",
                     *out, *tb]]
        return [["bench", "--device", "cpu", "--preset", "tiny", "--preset", "ladder-786k",
                 "--steps", "5", *out]]
    if name == "validate":
        out = ["--out", str(folder / "validate")]
        if counter == "ncu":
            grid = ["--grid", "ncu"] if budgeted else []
            return [["validate", "--counter", "ncu", *grid, *out, *tb]]
        if gpu:  # the dispatcher counts on the meta device: the whole grid in seconds
            return [["validate", "--counter", "dispatch", *out, *tb]]
        small = ["--quick"] if (budgeted or quick) else []
        tb = _budget_flag(cap, device, name, parts=2)
        return [["validate", "--counter", "dispatch", *small, *out, *tb],
                # the Triton kernels themselves, block product by block product
                ["validate", "--counter", "interpreter", "--quick", "--out",
                 str(folder / "validate-interpreter"), *tb]]
    if name == "scaling":
        cmd = ["scale", "--out", str(folder / "scaling"), "--device", device, "--no-progress"]
        if budgeted or quick:
            cmd.append("--quick")
        if budgeted and not gpu:  # fewer steps per run where the budget is short (300 at 120 s),
            # in this one process: a second worker's start costs seconds a short budget lacks
            cmd += ["--steps", str(int(min(300, max(60, 300 * cap / 120)))), "--workers", "1"]
        return [cmd + tb]
    raise ValueError(f"unknown stage {name!r}; supported: {', '.join(STAGES)}")


def ncu_counter_choice(device: str) -> tuple[str, str | None]:
    """("ncu", None) where ncu can be found on a GPU, else ("dispatch", why not ncu)."""
    if device != "cuda":
        return "dispatch", None
    try:
        ncu.ncu_path()
    except ncu.NcuUnavailable as e:
        return "dispatch", f"ncu not used: {e}"
    return "ncu", None


def stage_cap(share: Share, budget: float, left: float, last: bool) -> float | None:
    """A stage's cap: its share of the budget, at least its minimum, at most what is left (the
    last stage: all that is left); None when what is left is under its minimum."""
    cap = left if last or share.fraction is None else min(max(share.min_s, share.fraction * budget), left)
    return cap if cap >= share.min_s else None


def plan_report(device: str, budget: float | None, stages: list[str], folder: Path,
                quick: bool = False, counter: str = "dispatch", elapsed: float = 0.0) -> list[StagePlan]:
    """The stages in priority order with their caps and commands. With a budget each stage gets
    its share (at least its minimum) of what is left after the stages before it and the reserve
    for the report; a stage that cannot get its minimum is skipped, saying so; the last stage gets
    all that is left. `elapsed`: seconds already spent (the process's start)."""
    shares = GPU_SHARES if device == "cuda" else CPU_SHARES
    isolated = device == "cuda" and budget is not None
    plans = []
    left = None if budget is None else budget - elapsed - RESERVE_S[device]
    chosen = [s for s in STAGES if s in stages]
    runnable = [s for s in chosen if s in shares]
    for name in chosen:
        if name not in shares:
            plans.append(StagePlan(name, None, False, skip=f"runs on a GPU only (this report is for {device})"))
            continue
        if budget is None:
            plans.append(StagePlan(name, None, False,
                                   stage_commands(name, folder, device, None, quick, counter)))
            continue
        cap = stage_cap(shares[name], budget, left, last=name == runnable[-1])
        if cap is None:
            plans.append(StagePlan(name, 0.0, isolated,
                                   skip=f"the budget left ({max(0.0, left):.0f} s) is under this stage's "
                                        f"minimum of {shares[name].min_s:.0f} s"))
            continue
        left -= cap
        plans.append(StagePlan(name, cap, isolated and name != "flops",
                               stage_commands(name, folder, device, cap, quick, counter)))
    return plans


# --------------------------------------------------------------------------------------------
# Running commands: in this process, or in their own process stopped at a cap
# --------------------------------------------------------------------------------------------

class _Tee(io.TextIOBase):
    """Writes to a log file and, optionally, to the terminal."""

    def __init__(self, log, echo=None):
        self.log, self.echo = log, echo

    def write(self, s: str) -> int:
        self.log.write(s)
        self.log.flush()
        if self.echo is not None:
            self.echo.write(s)
            self.echo.flush()
        return len(s)

    def flush(self) -> None:
        self.log.flush()


def run_command(argv: list[str], log_path: Path, echo_stderr: bool = True) -> tuple[int, str]:
    """Run `sixn <argv>` in this process, stdout and stderr kept in log_path (stderr, where the
    progress goes, also shown). Returns the exit status and what the command printed on stdout."""
    name = argv[0]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    with open(log_path, "a") as log:
        log.write(f"$ sixn {' '.join(argv)}\n")
        log.flush()
        tee_out = _Tee(log)
        tee_err = _Tee(log, sys.__stderr__ if echo_stderr else None)

        class _Both(io.TextIOBase):
            def write(self, s):
                out.write(s)
                return tee_out.write(s)

        with contextlib.redirect_stdout(_Both()), contextlib.redirect_stderr(tee_err):
            rc = cli.invoke(name, argv[1:])
        log.write(f"# exit status {rc}\n")
    return rc, out.getvalue()


TIMED_OUT = -9  # the exit status recorded for a command stopped at its cap


def run_isolated(argv: list[str], log_path: Path, timeout: float) -> tuple[int, str]:
    """Run `sixn <argv>` as its own process (group), stdout and stderr into log_path, stopped
    (SIGTERM, then SIGKILL) after `timeout` seconds: (exit status or TIMED_OUT, stdout)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ sixn {' '.join(argv)}   (own process, stopped after {timeout:.0f} s)\n")
    return run_with_cap([sys.executable, "-m", "sixn.bench.cli", *argv], log_path, timeout)


def run_with_cap(cmd: list[str], log_path: Path, timeout: float) -> tuple[int, str]:
    """Run `cmd` in a new process group, stderr appended to log_path as it comes, stdout kept and
    appended at the end; the group is stopped after `timeout` seconds (TIMED_OUT)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "a") as log, tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=log, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = TIMED_OUT
        stdout.seek(0)
        text = stdout.read()
        log.write(text)
        log.write(f"# {'stopped at its cap' if rc == TIMED_OUT else f'exit status {rc}'}\n")
    return rc, text


def _error_line(log_path: Path, argv0: str) -> str:
    """The command's own one-line error from its log, if it printed one."""
    prefix = f"sixn {argv0}: error: "
    lines = [ln.strip() for ln in log_path.read_text().splitlines() if ln.startswith(prefix)] \
        if log_path.exists() else []
    return lines[-1][len(prefix):] if lines else ""


# --------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------

@dataclass
class Runner:
    """Runs a stage's commands, in this process or stopped at the stage's deadline."""
    folder: Path
    isolated: bool
    deadline: float | None          # time.monotonic() when the stage's cap is reached
    notes: list[str] = field(default_factory=list)

    def __call__(self, argv: list[str], log_name: str, echo: bool = True) -> tuple[int, str]:
        log = self.folder / "logs" / f"{log_name}.log"
        if self.isolated and self.deadline is not None:
            rc, out = run_isolated(argv, log, self.deadline - time.monotonic())
            if rc == TIMED_OUT:
                self.notes.append(f"`sixn {argv[0]}` was stopped at the stage's cap; what it wrote "
                                  f"until then is kept")
            return rc, out
        return run_command(argv, log, echo_stderr=echo)


def _stage_flops(plan: StagePlan, run: Runner) -> dict:
    files = []
    for argv in plan.commands:
        rc, text = run(argv, "flops", echo=False)
        if rc:
            raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc}); see logs/flops.log")
        preset = argv[argv.index("--preset") + 1]
        path = run.folder / "flops" / f"{preset}.json"
        write_json(path, json.loads(text), provenance(command=f"sixn {' '.join(argv)}"))
        files.append(str(path.relative_to(run.folder)))
    return {"files": files}


def _run_all(plan: StagePlan, run: Runner, log: str, ok_codes=(0,)) -> None:
    for argv in plan.commands:
        rc, _ = run(argv, log)
        if rc == TIMED_OUT:
            return
        if rc not in ok_codes:
            why = _error_line(run.folder / "logs" / f"{log}.log", argv[0])
            raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc})" + (f": {why}" if why else "")
                               + f"; see logs/{log}.log")


def _stage_check(plan: StagePlan, run: Runner) -> dict:
    _run_all(plan, run, "check", ok_codes=(0, 1))  # 1: some check failed, reported in the section
    c = _read(run.folder / "kernels" / "check.json")
    if c:
        bad = [r for r in c.get("rows", []) if not r.get("ok")]
        if bad:
            run.notes.append(f"{len(bad)} of {len(c['rows'])} kernel checks failed (see the check "
                             f"section)")
        if c.get("skipped_cases"):
            run.notes.append(f"shortened: {len(c['skipped_cases'])} checks not run within the cap")
    return {"files": ["kernels/check.json", "kernels/check.csv"]}


def _stage_kernels(plan: StagePlan, run: Runner) -> dict:
    _run_all(plan, run, "kernels")
    k = _read(run.folder / "kernels" / "kernels.json")
    if k and k.get("skipped_cases"):
        run.notes.append(f"shortened: {len(k['skipped_cases'])} cases not timed within the cap "
                         f"({', '.join(k['skipped_cases'])})")
    return {"files": ["kernels/kernels.json", "kernels/kernels.csv"]}


def _stage_bench(plan: StagePlan, run: Runner) -> dict:
    _run_all(plan, run, "bench")
    b = _read(run.folder / "bench" / "bench.json")
    if b:
        cut = [f"{r['preset']} {r['provider']}" for r in b.get("rows", [])
               if r.get("error") == TIME_BUDGET_SPENT]
        if cut:
            run.notes.append(f"shortened: not run within the cap: {', '.join(cut)}")
    return {"files": ["bench/bench.json", "bench/bench.csv"]}


def _stage_validate(plan: StagePlan, run: Runner) -> dict:
    counter = plan.commands[0][plan.commands[0].index("--counter") + 1]
    try:
        _run_all(plan, run, "validate", ok_codes=(0, 1))  # 1: some shape refused, listed
    except RuntimeError as e:
        if counter != "ncu":
            raise
        # ncu cannot count here (LibraryNotLoaded, ERR_NVGPUCTRPERM, ...): the dispatcher counts
        run.notes.append(f"fell back to the dispatch counter: Nsight Compute could not count here "
                         f"({str(e).split(': ', 1)[-1]})")
        fallback = ["validate", "--counter", "dispatch", "--out", str(run.folder / "validate")]
        rc, _ = run(fallback, "validate")
        if rc not in (0,):
            raise RuntimeError(f"sixn {' '.join(fallback)} failed (exit {rc}); see logs/validate.log")
        counter = "dispatch"
    v = _read(run.folder / "validate" / "validate.json")
    if v:
        if v.get("skipped_shapes"):
            run.notes.append(f"shortened: not counted within the cap: {', '.join(v['skipped_shapes'])}")
        if v.get("refused"):
            run.notes.append(f"{len(v['refused'])} counts refused by ncu, their raw CSVs kept "
                             f"(validate/refused_*.csv)")
    return {"files": ["validate/validate.json"], "counter": counter}


def _stage_scaling(plan: StagePlan, run: Runner) -> dict:
    _run_all(plan, run, "scaling")
    nr = _read(run.folder / "scaling" / "not_run.json")
    if nr:
        run.notes.append(f"shortened: {len(nr['runs'])} ladder runs not started within the cap")
    return {"files": ["scaling/summary.csv", "scaling/fits.json"]}


STAGE_FUNCS: dict[str, Callable[[StagePlan, Runner], dict]] = {
    "flops": _stage_flops, "check": _stage_check, "kernels": _stage_kernels, "bench": _stage_bench,
    "validate": _stage_validate, "scaling": _stage_scaling,
}


STAGES_REMEDY = ("rerun with --restart to redo the stages (their output files are overwritten), "
                 "or give another --out")


def read_stages(path: Path, restart: bool = False) -> dict:
    """stages.json of a report folder, checked ({} when there is none); a damaged one is a
    CorruptFile, or with restart=True (the chosen stages are redone anyway) set aside with a
    notice."""
    if not path.exists():
        return {}
    try:
        old = read_json(path, what="the report's stage record", remedy=STAGES_REMEDY,
                        required={"stages": dict})
        for name, info in old["stages"].items():
            if not isinstance(info, dict) or not isinstance(info.get("status"), str):
                raise CorruptFile(path, f"the record of stage {name!r} has no status", STAGES_REMEDY)
    except CorruptFile as e:
        if not restart:
            raise
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        _say(f"notice: {path}: {e.problem}: moved it to {aside.name}; the record starts afresh")
        return {}
    return old


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Packing the folder
# --------------------------------------------------------------------------------------------

def pack(folder: Path, dest: Path) -> int:
    """tar.gz of the whole folder (checkpoints and ncu binaries left out) written atomically to
    dest; returns its size in bytes."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")

    def keep(info: tarfile.TarInfo):
        return None if info.name.endswith(PACK_EXCLUDE_SUFFIXES) else info
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name, filter=keep)
    os.replace(tmp, dest)
    return dest.stat().st_size


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def default_folder(device: str, quick: bool) -> Path:
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    return results_root() / f"report-{device_slug(device)}-{date}{'-quick' if quick else ''}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: the budget of --budget {QUICK_BUDGET_S['cpu']:.0f} on a CPU, "
                        f"{QUICK_BUDGET_S['cuda']:.0f} on a GPU, at the smallest sizes")
    p.add_argument("--budget", type=argtypes.positive_float, default=None, metavar="SECONDS",
                   help="size the job to this wall-clock budget: a cap per stage in priority order, "
                        "the scaling ladder gets what is left")
    p.add_argument("--pack", type=argtypes.output_file, default=None, metavar="FILE.tgz",
                   help="re-pack the whole report folder into FILE.tgz after every stage")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (stages, caps, commands) and exit; runs nothing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): the GPU when torch sees one, else the CPU")
    p.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="report folder (default results/report-<device>-<date>[-quick])")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="run only these stages")
    p.add_argument("--restart", action="store_true",
                   help="redo the chosen stages (--stages) even if they finished before")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 where it cannot be read)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _say(msg: str) -> None:
    print(f"[sixn report] {msg}", file=sys.stderr, flush=True)


def format_plan(plans: list[StagePlan], budget: float | None, device: str, elapsed: float) -> str:
    lines = [f"plan for {device}" + (f", budget {budget:.0f} s" if budget is not None else ", no budget")]
    total = 0.0
    for p in plans:
        cap = "-" if p.cap_s is None else f"{p.cap_s:.0f} s"
        lines.append(f"  {p.name:<9} {cap:>7}  " + (f"skipped: {p.skip}" if p.skip else
                                                      ("own process, " if p.isolated else "") +
                                                      f"{len(p.commands)} command(s)"))
        for c in p.commands:
            lines.append(f"             $ sixn {' '.join(c)}")
        for n in p.notes:
            lines.append(f"             note: {n}")
        total += p.cap_s or 0.0
    if budget is not None:
        lines.append(f"  caps {total:.0f} s + started {elapsed:.0f} s ago + reserve "
                     f"{RESERVE_S[device]:.0f} s for the report = {total + elapsed + RESERVE_S[device]:.0f} s "
                     f"of {budget:.0f} s")
    return "\n".join(lines)


def _stale(info: dict, prov: dict, plan_meta: dict, old_plan: dict) -> str | None:
    """Why a stage kept from an earlier run no longer matches this one, if it does not."""
    why = []
    if info.get("git_commit") != prov["git_commit"]:
        why.append(f"made at git {info.get('git_commit')}, this report is at {prov['git_commit']}")
    for key in ("device", "budget_s", "quick"):
        if key in old_plan and old_plan.get(key) != plan_meta.get(key):
            why.append(f"{key} was {old_plan.get(key)}, now {plan_meta.get(key)}")
    return "; ".join(why) + f" (on {info.get('date')})" if why else None


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic() - process_age_s()  # the budget counts from the process's start
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available() and not args.dry_run:
        raise CLIError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto "
                       "(or --dry-run to see the GPU plan)")
    budget = args.budget if args.budget is not None else (QUICK_BUDGET_S[device] if args.quick else None)
    folder = Path(args.out) if args.out else default_folder(device, args.quick)
    counter, why_not_ncu = ncu_counter_choice(device)
    elapsed = time.monotonic() - t_start
    plans = plan_report(device, budget, list(args.stages), folder, args.quick, counter, elapsed)
    if why_not_ncu:
        next((p for p in plans if p.name == "validate"), StagePlan("", None, False)).notes.append(why_not_ncu)
    if args.dry_run:
        dry = {"device": device, "budget_s": budget, "elapsed_s": round(elapsed, 1),
               "reserve_s": RESERVE_S[device], "stages": [p.to_dict() for p in plans],
               "total_s": round(elapsed + RESERVE_S[device] + sum(p.cap_s or 0 for p in plans), 1)}
        print(json.dumps(dry, indent=2) if args.json else format_plan(plans, budget, device, elapsed))
        return 0

    folder.mkdir(parents=True, exist_ok=True)
    plan_meta = {"device": device, "quick": args.quick, "budget_s": budget, "stages": list(args.stages),
                 "plan": [p.to_dict() for p in plans]}
    prov = provenance(device)
    state_path = folder / "stages.json"
    clean_stale_temps(folder)   # left by a report killed while it wrote report.md or stages.json
    old = read_stages(state_path, restart=args.restart)
    state = old.get("stages", {})
    old_plan = old.get("plan", {})
    if args.restart:  # redo the chosen stages; the others keep what they had
        for name in args.stages:
            state.pop(name, None)

    def save() -> None:
        write_json(state_path, {"plan": {k: v for k, v in plan_meta.items() if k != "plan"},
                                "budget_s": budget, "planned": plan_meta["plan"], "stages": state}, prov)

    def repack() -> None:
        if args.pack:
            size = pack(folder, Path(args.pack))
            _say(f"packed {folder} into {args.pack} ({size / 2**20:.1f} MiB)")

    reserve_deadline = None if budget is None else t_start + budget - RESERVE_S[device]
    for i, p in enumerate(plans):
        tag = f"{i + 1}/{len(plans)} {p.name}"
        if state.get(p.name, {}).get("status") == "done":
            stale = _stale(state[p.name], prov, plan_meta, old_plan)
            state[p.name]["stale"] = stale
            _say(f"{tag}: done earlier, skipped" + (f" (stale: {stale})" if stale else ""))
            continue
        started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        # The stage's cap from what is left now (earlier stages may have run long or short); a
        # stage skipped in the plan for want of time runs if time was freed; the last runnable
        # stage gets all that is left.
        t0 = time.monotonic()
        cap = p.cap_s
        if budget is not None and p.name in (GPU_SHARES if device == "cuda" else CPU_SHARES):
            shares = GPU_SHARES if device == "cuda" else CPU_SHARES
            last = not any(q.name in shares for q in plans[i + 1:])
            cap = stage_cap(shares[p.name], budget, reserve_deadline - t0, last)
            if cap is None:
                left = max(0.0, reserve_deadline - t0)
                state[p.name] = {"status": "skipped", "seconds": 0, "date": started, "cap_s": 0.0,
                                 "git_commit": prov["git_commit"], "command": prov["command"],
                                 "notes": [f"skipped: only {left:.0f} s of the budget were left for it "
                                           f"(it needs {shares[p.name].min_s:.0f} s)"]}
                _say(f"{tag}: skipped (only {left:.0f} s left)")
                save()
                continue
            p = StagePlan(p.name, cap, device == "cuda" and p.name != "flops",
                          stage_commands(p.name, folder, device, cap, args.quick, counter),
                          notes=list(p.notes))
        elif p.skip:
            state[p.name] = {"status": "skipped", "seconds": 0, "date": started, "cap_s": p.cap_s,
                             "git_commit": prov["git_commit"], "command": prov["command"],
                             "notes": [f"skipped: {p.skip}"]}
            _say(f"{tag}: skipped ({p.skip})")
            save()
            continue
        _say(f"{tag}" + (f" (cap {cap:.0f} s)" if cap is not None else "") + " ...")
        runner = Runner(folder, p.isolated, None if cap is None else t0 + cap, notes=list(p.notes))
        try:
            info = STAGE_FUNCS[p.name](p, runner)
            status = "shortened" if any(n.startswith(("shortened", "`sixn")) for n in runner.notes) else "done"
        except Exception as e:  # a failed stage is reported, the others still run
            info, status = {"error": f"{type(e).__name__}: {e}"}, "failed"
            _say(f"{p.name} failed: {e}")
        state[p.name] = {"status": status, "seconds": round(time.monotonic() - t0, 1),
                         "cap_s": None if cap is None else round(cap, 1), "date": started,
                         "git_commit": prov["git_commit"], "command": prov["command"],
                         "commands": [" ".join(["sixn", *c]) for c in p.commands],
                         "notes": runner.notes, **info}
        save()
        write_report(folder, plan_meta, prov, STAGES)
        repack()
    report = write_report(folder, plan_meta, prov, STAGES)
    repack()
    failed = [s for s in args.stages if state.get(s, {}).get("status") == "failed"]
    summary = {"folder": str(folder), "report": str(report), "stages": state, "failed": failed,
               "seconds": round(time.monotonic() - t_start, 1), "budget_s": budget,
               "pack": str(args.pack) if args.pack else None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"report: {report}" + (f" (packed: {args.pack})" if args.pack else ""))
        for s in args.stages:
            st = state.get(s, {})
            print(f"  {s:<9} {st.get('status', 'not run'):<9} {st.get('seconds', 0):>7.1f} s"
                  + (f"  {st['error']}" if st.get("error") else "")
                  + "".join(f"\n             {n}" for n in st.get("notes", [])))
        if budget is not None:
            print(f"  total     {time.monotonic() - t_start:.1f} s of a {budget:.0f} s budget")
    return 1 if failed else 0
