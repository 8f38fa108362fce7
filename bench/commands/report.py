"""`sixn report`: the main job. Benchmark this device, check C = 6N against counted FLOPs, train a
ladder of models and fit scaling laws, and write it all into one folder a person can read.

Stages, each a real sixn command whose console output is kept in logs/<stage>.log:
  1. flops     `sixn flops --json` for the reference shapes (analytic accounting, Kaplan's Table 1)
  2. bench     `sixn bench`: measured roofs, training-step tokens/s, MFU and HFU per provider
  3. validate  `sixn validate`: a step's executed FLOPs counted over a grid of shapes (dispatcher on
               the CPU, Nsight Compute on a GPU that has it) against 6N, 6N + context and full_model;
               on the CPU also the Triton kernels themselves, counted block product by block product
               in the Triton interpreter
  4. scaling   `sixn scale`: a ladder of model sizes, then the fits and plots
Then report.md: the key figures, the plots inline, how 6N compared with the measured count and the
fitted exponents next to Kaplan's. Every number in report.md is read from a CSV/JSON in the folder;
figures.json lists each one with the file and key it came from.

The folder is results/report-<device>-<date>[-quick]/ (--out to move it). A stage that finished is
skipped when the command is run again (the scaling sweep also resumes a run cut off midway), so an
interrupted report continues where it stopped; --restart starts over.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from sixn.bench import argtypes, cli
from sixn.bench.cli import CLIError
from sixn.bench.results import (atomic_write_text, device_slug, fmt_number, provenance, read_rows,
                              results_root, write_json)

STAGES = ("flops", "bench", "validate", "scaling")
FLOPS_PRESETS = ("gpt2-small", "gpt2-medium", "tiny")


# --------------------------------------------------------------------------------------------
# Running the stages
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


def _stage_flops(out: Path, plan: dict) -> dict:
    files = []
    for preset in FLOPS_PRESETS:
        rc, text = run_command(["flops", "--preset", preset, "--json"], out / "logs" / "flops.log",
                               echo_stderr=False)
        if rc:
            raise RuntimeError(f"sixn flops --preset {preset} failed (exit {rc}); see logs/flops.log")
        path = out / "flops" / f"{preset}.json"
        write_json(path, json.loads(text), provenance(command=f"sixn flops --preset {preset} --json"))
        files.append(str(path.relative_to(out)))
    return {"files": files}


def _stage_bench(out: Path, plan: dict) -> dict:
    argv = ["bench", "--device", plan["device"], "--out", str(out / "bench")]
    if plan["quick"]:
        argv += ["--preset", "tiny", "--steps", "3", "--warmup", "1"]
    elif plan["device"] == "cpu":
        argv += ["--preset", "tiny", "--preset", "ladder-786k", "--steps", "5"]
    rc, _ = run_command(argv, out / "logs" / "bench.log")
    if rc:
        raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc}); see logs/bench.log")
    return {"files": ["bench/bench.json", "bench/bench.csv"]}


def _ncu_available() -> bool:
    import shutil
    return torch.cuda.is_available() and shutil.which("ncu") is not None


def _stage_validate(out: Path, plan: dict) -> dict:
    files = []
    if plan["device"] == "cuda" and _ncu_available():
        counter = "ncu"
    else:
        counter = "dispatch"
    argv = ["validate", "--counter", counter, "--out", str(out / "validate")]
    if plan["quick"]:
        argv.append("--quick")
    rc, _ = run_command(argv, out / "logs" / "validate.log")
    if rc:
        raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc}); see logs/validate.log")
    files.append("validate/validate.json")
    # The triton kernels themselves, counted block product by block product in the interpreter.
    if plan["device"] == "cpu":
        argv = ["validate", "--counter", "interpreter", "--quick", "--out",
                str(out / "validate-interpreter")]
        rc, _ = run_command(argv, out / "logs" / "validate.log")
        if rc:
            raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc}); see logs/validate.log")
        files.append("validate-interpreter/validate.json")
    return {"files": files, "counter": counter}


def _stage_scaling(out: Path, plan: dict) -> dict:
    argv = ["scale", "--out", str(out / "scaling"), "--device", plan["device"]]
    if plan["quick"]:
        argv.append("--quick")
    rc, _ = run_command(argv, out / "logs" / "scaling.log")
    if rc:
        raise RuntimeError(f"sixn {' '.join(argv)} failed (exit {rc}); see logs/scaling.log")
    return {"files": ["scaling/summary.csv", "scaling/fits.json"]}


STAGE_FUNCS: dict[str, Callable[[Path, dict], dict]] = {
    "flops": _stage_flops, "bench": _stage_bench, "validate": _stage_validate,
    "scaling": _stage_scaling,
}


# --------------------------------------------------------------------------------------------
# Figures: every number in report.md is read from a file in the folder, and recorded
# --------------------------------------------------------------------------------------------

def lookup(folder: Path, source: dict) -> Any:
    """The value a figure was read from: {"file", "path"} (JSON keys / list indices) or
    {"file", "where": {column: value}, "column"} (a CSV row)."""
    path = folder / source["file"]
    if path.suffix == ".csv":
        for row in read_rows(path, text=True):
            if all(row.get(k) == str(v) for k, v in source["where"].items()):
                return row[source["column"]]
        raise KeyError(f"{source['file']}: no row where {source['where']}")
    value: Any = json.loads(path.read_text())
    for key in source["path"]:
        value = value[key]
    return value


_SPECS = {"int": ",.0f", "pct": ".1%", "sci": ".3g"}  # report formats -> format() specs


def format_value(value: Any, fmt: str) -> str:
    """A figure as the report prints it: fmt "str", "int", "pct", "sci" or a format() spec; n/a
    when missing or not finite. Values read from CSVs arrive as text."""
    if fmt == "str":
        return "n/a" if value is None or value == "" else str(value)
    v = float(value) if isinstance(value, str) and value != "" else value
    return fmt_number(v, _SPECS.get(fmt, fmt), missing="n/a")


class Figures:
    def __init__(self, folder: Path):
        self.folder = folder
        self.items: list[dict] = []

    def __call__(self, file: str, *path, fmt: str = ".3g", where: dict | None = None,
                 column: str | None = None) -> str:
        source = ({"file": file, "where": where, "column": column} if where is not None
                  else {"file": file, "path": list(path)})
        try:
            text = format_value(lookup(self.folder, source), fmt)
        except (KeyError, IndexError, TypeError, FileNotFoundError):
            text = "n/a"
        if text != "n/a":
            self.items.append({"text": text, "fmt": fmt, **source})
        return text


# --------------------------------------------------------------------------------------------
# report.md
# --------------------------------------------------------------------------------------------

def _load(folder: Path, rel: str) -> Any:
    p = folder / rel
    return json.loads(p.read_text()) if p.exists() else None


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _images(folder: Path, sub: str) -> list[str]:
    d = folder / sub
    return [f"![{p.stem}]({sub}/{p.name})" for p in sorted(d.glob("*.png"))] if d.exists() else []


def _section_flops(folder: Path, fig: Figures) -> list[str]:
    f = "flops/gpt2-small.json"
    if _load(folder, f) is None:
        return []
    return [
        "## 1. The analytic count (model/flops.py)",
        "",
        f"GPT-2 small (12 x 768, n_ctx 1024, n_vocab 50257): non-embedding N = "
        f"{fig(f, 'params', 'nonembedding', fmt='int')}, Kaplan's 6N = "
        f"{fig(f, 'flops_per_token', 'kaplan_6N', fmt='int')} FLOPs per token, "
        f"6N + context = {fig(f, 'flops_per_token', 'kaplan_6N_context', fmt='int')}, "
        f"PaLM's 6 N_total + 12 L H Q T = {fig(f, 'flops_per_token', 'palm', fmt='int')}, "
        f"and every row the model computes (head, element-wise work) = "
        f"{fig(f, 'flops_per_token', 'full_model', fmt='int')}. The full table is in "
        f"`flops/gpt2-small.json` (`sixn flops --preset gpt2-small`).",
        "",
    ]


def _section_bench(folder: Path, fig: Figures) -> list[str]:
    b = _load(folder, "bench/bench.json")
    if b is None:
        return []
    F = "bench/bench.json"
    lines = ["## 2. This device", ""]
    lines.append(f"Device: {fig(F, 'device', fmt='str')}. Datasheet peak: "
                 + (f"{fig(F, 'peak', 'tflops', fmt='.1f')} TFLOP/s ({fig(F, 'peak', 'source', fmt='str')})"
                    if isinstance(b.get("peak"), dict) else f"none ({b.get('peak_message', 'unknown device')})")
                 + ".")
    if b.get("roofs"):
        lines.append(f"Measured roofs: dense GEMM {fig(F, 'roofs', 'gemm_tflops', fmt='.4g')} TFLOP/s "
                     f"({fig(F, 'roofs', 'dtype', fmt='str')}, best shape), memory copy "
                     f"{fig(F, 'roofs', 'bandwidth_gbs', fmt='.4g')} GB/s (bytes read + written).")
    lines.append("")
    rows = []
    for i, r in enumerate(b.get("rows", [])):
        if str(r.get("provider", "")).startswith("roof:") or r.get("error"):
            continue
        rows.append([
            fig(F, "rows", i, "preset", fmt="str"), fig(F, "rows", i, "provider", fmt="str"),
            f"{fig(F, 'rows', i, 'batch', fmt='int')} x {fig(F, 'rows', i, 'seq_len', fmt='int')}",
            fig(F, "rows", i, "tokens_per_s", fmt="int"), fig(F, "rows", i, "tflops", fmt=".4g"),
            fig(F, "rows", i, "mfu", fmt="pct"), fig(F, "rows", i, "mfu_kaplan_6N_context", fmt="pct"),
            fig(F, "rows", i, "hfu", fmt="pct"), fig(F, "rows", i, "peak_mem_gb", fmt=".3g"),
        ])
    if rows:
        lines += ["Training step (median over timed steps; TFLOP/s in the palm convention):", "",
                  _md_table(["preset", "provider", "batch x T", "tokens/s", "TFLOP/s", "MFU (palm)",
                             "MFU (6N+ctx)", "HFU", "peak mem GB"], rows), ""]
    for note in b.get("notes", []):
        lines.append(f"- {note}")
    lines += [""] + _images(folder, "bench") + [""]
    return lines


def _section_validate(folder: Path, fig: Figures) -> list[str]:
    v = _load(folder, "validate/validate.json")
    if v is None:
        return []
    F = "validate/validate.json"
    lines = ["## 3. Is C = 6N what a training step executes?", ""]
    lines.append(f"Counter: {fig(F, 'counter', fmt='str')} ({fig(F, 'backend', fmt='str')} backend), one "
                 f"training step (forward + backward) per shape. Measured equals the analytic executed "
                 f"count for every shape: {fig(F, 'measured_equals_analytic', fmt='str')} (largest relative "
                 f"difference {fig(F, 'max_rel_error_vs_analytic', fmt='.3g')}).")
    lines.append("")
    rows = []
    for i, _ in enumerate(v.get("rows", [])):
        rows.append([fig(F, "rows", i, "shape", fmt="str"),
                     fig(F, "rows", i, "d_model_over_n_ctx", fmt=".3g"),
                     fig(F, "rows", i, "measured", fmt="sci"),
                     fig(F, "rows", i, "measured_over_6N", fmt=".3f"),
                     fig(F, "rows", i, "measured_over_6N_context", fmt=".3f"),
                     fig(F, "rows", i, "measured_over_full_model", fmt=".3f"),
                     fig(F, "rows", i, "head_share", fmt="pct")])
    lines += [_md_table(["shape", "d_model/n_ctx", "measured FLOPs/step", "/ 6N", "/ (6N+ctx)",
                         "/ full_model", "head share"], rows), ""]
    ratios = [r["measured_over_6N"] for r in v.get("rows", [])]
    if ratios:
        lo = min(range(len(ratios)), key=ratios.__getitem__)
        hi = max(range(len(ratios)), key=ratios.__getitem__)
        lines.append(
            f"6N undercounts the executed work by a factor between "
            f"{fig(F, 'rows', lo, 'measured_over_6N', fmt='.3f')} ({fig(F, 'rows', lo, 'shape', fmt='str')}) and "
            f"{fig(F, 'rows', hi, 'measured_over_6N', fmt='.3f')} ({fig(F, 'rows', hi, 'shape', fmt='str')}). "
            "Where d_model is small against n_ctx (left of Kaplan's d_model = n_ctx/12 line) the attention "
            "context term dominates; where n_vocab is large against d_model the head (de-embedding), which "
            "6N leaves out, does. The torch reference also runs the full T x T attention square and masks it, "
            "twice the causal triangle that the model counts.")
        lines.append("")
    vi = _load(folder, "validate-interpreter/validate.json")
    if vi is not None:
        G = "validate-interpreter/validate.json"
        lines.append(
            f"The Triton kernels, counted in the Triton interpreter (every tl.dot executed, 2MNK each): "
            f"measured equals the analytic executed count, integer for integer: "
            f"{fig(G, 'measured_equals_analytic', fmt='str')}.")
        rows = []
        for i, _ in enumerate(vi.get("rows", [])):
            rows.append([fig(G, "rows", i, "shape", fmt="str"),
                         fig(G, "rows", i, "measured", fmt="int"),
                         fig(G, "rows", i, "analytic_executed", fmt="int"),
                         fig(G, "rows", i, "measured_over_full_model", fmt=".3f"),
                         fig(G, "rows", i, "triton_causal_block_overhead", fmt="pct"),
                         fig(G, "rows", i, "triton_backward_recompute_overhead", fmt="pct")])
        lines += ["", _md_table(["shape", "interpreter count", "analytic executed", "/ full_model",
                                 "causal-block overhead", "backward recompute"], rows), ""]
    lines += _images(folder, "validate") + [""]
    return lines


def _fit_text(fig: Figures, F: str, conv: str, law: str, param: str, fmt=".3g") -> str:
    base = ("by_convention", conv, law) if conv else ("independent", law)
    est = fig(F, *base, "params", param, fmt=fmt)
    if est == "n/a":
        return "n/a"
    lo = fig(F, *base, "intervals", param, 0, fmt=fmt)
    hi = fig(F, *base, "intervals", param, 1, fmt=fmt)
    return f"{est} [{lo}, {hi}]"


def _section_scaling(folder: Path, fig: Figures) -> list[str]:
    fits = _load(folder, "scaling/fits.json")
    summary_path = folder / "scaling" / "summary.csv"
    if fits is None and not summary_path.exists():
        return []
    lines = ["## 4. Scaling laws on measured compute", ""]
    if summary_path.exists():
        runs = read_rows(summary_path, text=True)
        S = "scaling/summary.csv"
        rows = [[fig(S, where={"run": r["run"]}, column="run", fmt="str"),
                 fig(S, where={"run": r["run"]}, column="kind", fmt="str"),
                 fig(S, where={"run": r["run"]}, column="N", fmt="int"),
                 fig(S, where={"run": r["run"]}, column="D", fmt="int"),
                 fig(S, where={"run": r["run"]}, column="val_loss", fmt=".4f"),
                 fig(S, where={"run": r["run"]}, column="C_kaplan_6N", fmt="sci"),
                 fig(S, where={"run": r["run"]}, column="C_measured", fmt="sci")] for r in runs]
        lines += [_md_table(["run", "kind", "N (non-emb.)", "tokens", "final val loss",
                             "C 6N (FLOPs)", "C measured (FLOPs)"], rows), ""]
    if fits is not None:
        F = "scaling/fits.json"
        convs = fits.get("conventions", [])
        rows = []
        for j, conv in enumerate(convs):
            rows.append([fig(F, "conventions", j, fmt="str"), _fit_text(fig, F, conv, "L_N", "alpha_N"),
                         fig(F, "by_convention", conv, "L_N", "r2_log", fmt=".4f"),
                         _fit_text(fig, F, conv, "L_Cmin", "alpha_C"),
                         _fit_text(fig, F, conv, "N_opt", "a")])
        pub = "published"
        rows.append(["Kaplan et al. (published)", fig(F, pub, "kaplan", "L_N", "alpha_N", fmt=".3g"), "-",
                     fig(F, pub, "kaplan", "L_Cmin", "alpha_C", fmt=".3g"),
                     fig(F, pub, "kaplan", "N_opt", "a", fmt=".3g")])
        lines += ["Fitted exponents with 95% bootstrap intervals, one row per compute convention. Each "
                  "convention's N is the one its compute implies, N = C / 6D: Kaplan's non-embedding N "
                  "under kaplan_6N, and larger effective sizes where the head, the context term or the "
                  "measured work are counted. The same runs, counted differently, give other exponents:",
                  "", _md_table(["convention", "alpha_N", "R^2 (log)", "alpha_C", "N_opt ~ C^a"], rows), ""]
        skipped = fits.get("skipped", [])
        if skipped:
            lines.append("Fits the sweep's data could not support:")
            lines += [f"- {s['fit']}" + (f" ({s['convention']})" if s.get("convention") else "")
                      + f": {s['reason']}" for s in skipped]
            lines.append("")
    lines += _images(folder, "scaling") + [""]
    return lines


def write_report(folder: Path, plan: dict, prov: dict, stage_info: dict) -> Path:
    fig = Figures(folder)
    head = [
        f"# sixn report: {prov['device']}",
        "",
        f"Written by `{prov['command']}` on {prov['date']} (git {prov['git_commit']}); torch "
        f"{prov['torch']}, triton {prov['triton']}, driver {prov['driver']}, Python {prov['python']}."
        + (" Quick mode: small sizes, a smoke run." if plan["quick"] else ""),
        "",
        "Every figure below is read from a CSV/JSON file in this folder (figures.json says which); "
        "the console output of each stage is in logs/.",
        "",
    ]
    body = (_section_flops(folder, fig) + _section_bench(folder, fig) + _section_validate(folder, fig)
            + _section_scaling(folder, fig))
    tail = ["## Stages", "", "Each stage records the run that made it (a resumed report keeps earlier stages):",
            "", _md_table(
        ["stage", "status", "seconds", "started", "git commit", "command"],
        [[s, fig("stages.json", "stages", s, "status", fmt="str"),
          fig("stages.json", "stages", s, "seconds", fmt=".0f"),
          fig("stages.json", "stages", s, "date", fmt="str"),
          fig("stages.json", "stages", s, "git_commit", fmt="str"),
          "`" + fig("stages.json", "stages", s, "command", fmt="str") + "`"] for s in STAGES]), ""]
    if plan["device"] == "cpu":
        tail += ["On a CPU this report has no GPU figures: no datasheet peak or MFU, no kernel timings, "
                 "no Nsight Compute counts. Run `sixn report` on a GPU for those.", ""]
    text = "\n".join(head + body + tail)
    atomic_write_text(folder / "report.md", text)
    write_json(folder / "figures.json", {"figures": fig.items}, prov)
    return folder / "report.md"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def default_folder(device: str, quick: bool) -> Path:
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    return results_root() / f"report-{device_slug(device)}-{date}{'-quick' if quick else ''}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a smoke run at the smallest sizes (under 3 minutes on a 2-core CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): the GPU when torch sees one, else the CPU")
    p.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="report folder (default results/report-<device>-<date>[-quick])")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                   help="run only these stages")
    p.add_argument("--restart", action="store_true",
                   help="redo the chosen stages (--stages) even if they finished before")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def run(args: argparse.Namespace) -> int:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    folder = Path(args.out) if args.out else default_folder(device, args.quick)
    folder.mkdir(parents=True, exist_ok=True)
    plan = {"device": device, "quick": args.quick, "stages": list(args.stages)}
    prov = provenance(device)
    state_path = folder / "stages.json"
    state = json.loads(state_path.read_text()).get("stages", {}) if state_path.exists() else {}
    if args.restart:  # redo the chosen stages; the others keep what they had
        for name in args.stages:
            state.pop(name, None)
    t_all = time.perf_counter()
    for i, name in enumerate(args.stages):
        if state.get(name, {}).get("status") == "done":
            print(f"[sixn report] {i + 1}/{len(args.stages)} {name}: done earlier, skipped",
                  file=sys.stderr, flush=True)
            continue
        print(f"[sixn report] {i + 1}/{len(args.stages)} {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            info = STAGE_FUNCS[name](folder, plan)
            status = "done"
        except Exception as e:  # a failed stage is reported, the others still run
            info, status = {"error": f"{type(e).__name__}: {e}"}, "failed"
            print(f"[sixn report] {name} failed: {e}", file=sys.stderr, flush=True)
        state[name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                       "date": started, "git_commit": prov["git_commit"],
                       "command": prov["command"], **info}
        write_json(state_path, {"plan": plan, "stages": state}, prov)
    report = write_report(folder, plan, prov, state)
    failed = [s for s in args.stages if state.get(s, {}).get("status") != "done"]
    summary = {"folder": str(folder), "report": str(report), "stages": state, "failed": failed,
               "seconds": round(time.perf_counter() - t_all, 1)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"report: {report}")
        for s in args.stages:
            st = state.get(s, {})
            print(f"  {s:<9} {st.get('status', 'not run'):<7} {st.get('seconds', 0):>7.1f} s"
                  + (f"  {st['error']}" if st.get("error") else ""))
    return 1 if failed else 0
