"""report.md of a `sixn report` folder: every figure read from a CSV/JSON file in the folder.

Figures: fig(file, *path) reads one value (a JSON path of keys and list indices, or a CSV cell
by row and column), formats it and records it with its source in figures.json; a sentence about
the figures is built only from values read this way, and says what they show (6N under- or
overcounting, the torch reference's square against the causal triangle, whether the conventions'
exponents differ), never what they are expected to show.

Sections, each written only when its stage left its files: the analytic count (flops/), the
kernels' correctness and speed on a GPU (kernels/check.json, kernels/kernels.json), this device
(bench/), the 6N study (validate/, validate-interpreter/), the scaling laws (scaling/), then the
stages (stages.json): status, time against cap, and every stage that was shortened, skipped, fell
back or is stale (made by an earlier run), with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sixn.bench.results import atomic_write_text, fmt_number, read_rows, write_json


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
    """fig(file, *path, fmt=...) -> the formatted value, recorded in .items with its source."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.items: list[dict] = []

    def value(self, file: str, *path, where: dict | None = None, column: str | None = None) -> Any:
        """The raw value (not recorded: use it to choose words, and print it through __call__)."""
        source = ({"file": file, "where": where, "column": column} if where is not None
                  else {"file": file, "path": list(path)})
        try:
            return lookup(self.folder, source)
        except (KeyError, IndexError, TypeError, FileNotFoundError):
            return None

    def __call__(self, file: str, *path, fmt: str = ".3g", where: dict | None = None,
                 column: str | None = None) -> str:
        source = ({"file": file, "where": where, "column": column} if where is not None
                  else {"file": file, "path": list(path)})
        try:
            text = format_value(lookup(self.folder, source), fmt)
        except (KeyError, IndexError, TypeError, FileNotFoundError, ValueError):
            text = "n/a"
        if text != "n/a":
            self.items.append({"text": text, "fmt": fmt, **source})
        return text


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


def _partial(fig: Figures, F: str, what: str) -> list[str]:
    """A line saying the file holds a partial result, when it says so itself."""
    if fig.value(F, "complete") is False:
        return [f"(Partial: {what} was cut off before it finished; the rows below are those done.)", ""]
    return []


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def section_flops(folder: Path, fig: Figures) -> list[str]:
    f = "flops/gpt2-small.json"
    if _load(folder, f) is None:
        return []
    return [
        "## The analytic count (model/flops.py)",
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


def section_check(folder: Path, fig: Figures) -> list[str]:
    c = _load(folder, "kernels/check.json")
    if c is None:
        return []
    F = "kernels/check.json"
    rows = c.get("rows", [])
    n_ok = sum(bool(r.get("ok")) for r in rows)
    lines = ["## The kernels on this GPU: correct?", ""] + _partial(fig, F, "the check")
    lines.append(f"Forward and every gradient of the Triton kernels against float64 PyTorch on "
                 f"awkward shapes (max |error| / max |reference|): {n_ok} of {len(rows)} within their "
                 f"tolerance." if rows else "No check finished.")
    table = [[fig(F, "rows", i, "family", fmt="str"), fig(F, "rows", i, "dtype", fmt="str"),
              fig(F, "rows", i, "shape", fmt="str"), fig(F, "rows", i, "max_rel_err", fmt=".2e"),
              fig(F, "rows", i, "tolerance", fmt="g"),
              "ok" if r.get("ok") else "FAILED: " + fig(F, "rows", i, "error", fmt="str")]
             for i, r in enumerate(rows)]
    if table:
        lines += ["", _md_table(["kernel", "dtype", "case", "max rel. error", "tolerance", "result"],
                                table)]
    return lines + [""]


def section_kernels(folder: Path, fig: Figures) -> list[str]:
    k = _load(folder, "kernels/kernels.json")
    if k is None:
        return []
    F = "kernels/kernels.json"
    lines = ["## Kernel speed against PyTorch", ""] + _partial(fig, F, "the kernel timing")
    ratios = k.get("ratios", [])
    if not ratios:
        lines.append("No Triton case and baseline were both timed.")
        return lines + [""]
    table = [[fig(F, "ratios", i, "family", fmt="str"), fig(F, "ratios", i, "mode", fmt="str"),
              fig(F, "ratios", i, "shape", fmt="str"), fig(F, "ratios", i, "baseline", fmt="str"),
              fig(F, "ratios", i, "triton_tflops", fmt=".4g"),
              fig(F, "ratios", i, "baseline_tflops", fmt=".4g"),
              fig(F, "ratios", i, "ratio", fmt=".3f")] for i in range(len(ratios))]
    faster = sum(r["ratio"] >= 1 for r in ratios)
    lines += [f"TFLOP/s in model FLOPs (FlashAttention convention for attention, GEMM FLOPs for the "
              f"MLP), median of timed repeats; Triton is at least as fast as the baseline in "
              f"{faster} of {len(ratios)} comparisons:", "",
              _md_table(["kernel", "mode", "case", "baseline", "triton TFLOP/s", "baseline TFLOP/s",
                         "triton / baseline"], table), ""]
    errors = [r for r in k.get("rows", []) if r.get("error")]
    if errors:
        lines.append(f"{len(errors)} measurements failed (their error is in kernels/kernels.json).")
        lines.append("")
    return lines + _images(folder, "kernels") + [""]


def section_bench(folder: Path, fig: Figures) -> list[str]:
    b = _load(folder, "bench/bench.json")
    if b is None:
        return []
    F = "bench/bench.json"
    lines = ["## This device", ""] + _partial(fig, F, "the benchmark")
    lines.append(f"Device: {fig(F, 'device', fmt='str')}. Datasheet peak: "
                 + (f"{fig(F, 'peak', 'tflops', fmt='.1f')} TFLOP/s ({fig(F, 'peak', 'source', fmt='str')})"
                    if isinstance(b.get("peak"), dict) else f"none ({b.get('peak_message', 'unknown device')})")
                 + ".")
    if b.get("roofs"):
        lines.append(f"Measured roofs: dense GEMM {fig(F, 'roofs', 'gemm_tflops', fmt='.4g')} TFLOP/s "
                     f"({fig(F, 'roofs', 'dtype', fmt='str')}, best shape), memory copy "
                     f"{fig(F, 'roofs', 'bandwidth_gbs', fmt='.4g')} GB/s (bytes read + written).")
    lines.append("")
    rows, failed = [], []
    for i, r in enumerate(b.get("rows", [])):
        if str(r.get("provider", "")).startswith("roof:"):
            continue
        if r.get("error"):
            failed.append(f"- {fig(F, 'rows', i, 'preset', fmt='str')} "
                          f"{fig(F, 'rows', i, 'provider', fmt='str')}: {fig(F, 'rows', i, 'error', fmt='str')}")
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
    if failed:
        lines += ["Not measured:"] + failed + [""]
    for t, target in enumerate(b.get("targets", [])):
        state = {True: "met", False: "missed", None: "not measured"}[target.get("met")]
        lines.append(f"- target {fig(F, 'targets', t, 'target', fmt='str')}: "
                     f"{fig(F, 'targets', t, 'value', fmt='.4g')} against a goal of "
                     f"{fig(F, 'targets', t, 'goal', fmt='g')}: {state}")
    for note in b.get("notes", []):
        lines.append(f"- {note}")
    lines += [""] + _images(folder, "bench") + [""]
    return lines


def _six_n_sentence(fig: Figures, F: str, rows: list[dict]) -> str:
    """What the measured / 6N ratios show, in words chosen by the ratios themselves."""
    ratios = [r["measured_over_6N"] for r in rows]
    lo = min(range(len(ratios)), key=ratios.__getitem__)
    hi = max(range(len(ratios)), key=ratios.__getitem__)

    def at(i):
        return (f"{fig(F, 'rows', i, 'measured_over_6N', fmt='.3f')} "
                f"({fig(F, 'rows', i, 'shape', fmt='str')})")
    under = [i for i, x in enumerate(ratios) if x > 1]
    over = [i for i, x in enumerate(ratios) if x < 1]
    if not over:
        text = (f"6N undercounts the executed work of every shape, by a factor between {at(lo)} and "
                f"{at(hi)}.")
    elif not under:
        text = (f"6N overcounts the executed work of every shape: measured / 6N lies between {at(lo)} "
                f"and {at(hi)}.")
    else:
        text = (f"6N undercounts the executed work of {len(under)} shapes (up to {at(hi)}) and "
                f"overcounts it for {len(over)} (down to {at(lo)}).")
    text += (f" At the largest gap, {fig(F, 'rows', hi, 'shape', fmt='str')} (d_model / n_ctx = "
             f"{fig(F, 'rows', hi, 'd_model_over_n_ctx', fmt='.3g')}), the head (de-embedding, which "
             f"6N leaves out) is {fig(F, 'rows', hi, 'head_share', fmt='pct')} of the measured step and "
             f"attention {fig(F, 'rows', hi, 'attention_share', fmt='pct')}.")
    return text


def _square_sentence(fig: Figures, F: str, rows: list[dict]) -> str:
    """The torch reference's full T x T square against the causal triangle, as measured."""
    with_sq = [i for i, r in enumerate(rows) if r.get("backend") == "torch"
               and r.get("torch_attention_square_overhead") is not None]
    if not with_sq:
        return ""
    i = max(with_sq, key=lambda j: rows[j]["seq_len"])
    return (f" The torch reference computes the full T x T square of attention scores and masks it: "
            f"at {fig(F, 'rows', i, 'shape', fmt='str')} that is "
            f"{fig(F, 'rows', i, 'torch_attention_square_overhead', fmt='pct')} more attention work "
            f"than the causal triangle the model counts.")


def section_validate(folder: Path, fig: Figures) -> list[str]:
    v = _load(folder, "validate/validate.json")
    if v is None:
        return []
    F = "validate/validate.json"
    lines = ["## Is C = 6N what a training step executes?", ""] + _partial(fig, F, "the study")
    rows = v.get("rows", [])
    if not rows:
        return lines + ["No shape was counted.", ""]
    exact = fig.value(F, "measured_equals_analytic")
    lines.append(f"Counter: {fig(F, 'counter', fmt='str')} ({fig(F, 'backend', fmt='str')} backend), one "
                 f"training step (forward + backward) per shape. The measured count "
                 + ("equals" if exact else "does not equal")
                 + f" the analytic executed count for every shape (largest relative difference "
                   f"{fig(F, 'max_rel_error_vs_analytic', fmt='.3g')}).")
    if isinstance(v.get("gemm_self_check"), dict):
        lines.append(f"Nsight Compute's self-check: a bf16 {fig(F, 'gemm_self_check', 'n', fmt='int')}^3 "
                     f"GEMM read {fig(F, 'gemm_self_check', 'measured', fmt='int')} tensor-core FLOPs "
                     f"against {fig(F, 'gemm_self_check', 'expected', fmt='int')} "
                     f"({fig(F, 'gemm_self_check', 'rel_error', fmt='.2e')} relative); its raw CSV is "
                     f"validate/gemm_self_check.csv, and each shape's is validate/raw_<shape>.csv.")
    lines.append("")
    table = [[fig(F, "rows", i, "shape", fmt="str"), fig(F, "rows", i, "d_model_over_n_ctx", fmt=".3g"),
              fig(F, "rows", i, "measured", fmt="sci"), fig(F, "rows", i, "measured_over_6N", fmt=".3f"),
              fig(F, "rows", i, "measured_over_6N_context", fmt=".3f"),
              fig(F, "rows", i, "measured_over_full_model", fmt=".3f"),
              fig(F, "rows", i, "head_share", fmt="pct")] for i in range(len(rows))]
    lines += [_md_table(["shape", "d_model/n_ctx", "measured FLOPs/step", "/ 6N", "/ (6N+ctx)",
                         "/ full_model", "head share"], table), ""]
    lines += [_six_n_sentence(fig, F, rows) + _square_sentence(fig, F, rows), ""]
    for j, r in enumerate(v.get("refused", [])):
        lines.append(f"- refused by the counter: {fig(F, 'refused', j, 'shape', fmt='str')} "
                     f"({fig(F, 'refused', j, 'reason', fmt='str')}; raw CSV kept as validate/"
                     f"{fig(F, 'refused', j, 'csv_file', fmt='str')})")
    vi = _load(folder, "validate-interpreter/validate.json")
    if vi is not None and vi.get("rows"):
        G = "validate-interpreter/validate.json"
        same = fig.value(G, "measured_equals_analytic")
        lines.append(
            f"The Triton kernels, counted in the Triton interpreter (every tl.dot executed, 2MNK each): "
            f"the measured count {'equals' if same else 'does not equal'} the analytic executed count "
            f"{'integer for integer' if same else ''} (largest relative difference "
            f"{fig(G, 'max_rel_error_vs_analytic', fmt='.3g')}).")
        table = [[fig(G, "rows", i, "shape", fmt="str"), fig(G, "rows", i, "measured", fmt="int"),
                  fig(G, "rows", i, "analytic_executed", fmt="int"),
                  fig(G, "rows", i, "measured_over_full_model", fmt=".3f"),
                  fig(G, "rows", i, "triton_causal_block_overhead", fmt="pct"),
                  fig(G, "rows", i, "triton_backward_recompute_overhead", fmt="pct")]
                 for i in range(len(vi["rows"]))]
        lines += ["", _md_table(["shape", "interpreter count", "analytic executed", "/ full_model",
                                 "causal-block overhead", "backward recompute"], table), ""]
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


def _exponents_sentence(fig: Figures, F: str, convs: list[str]) -> str:
    """Whether counting the same runs differently changed the L(N) exponent, as fitted."""
    got = [(c, fig.value(F, "by_convention", c, "L_N", "params", "alpha_N")) for c in convs]
    got = [(c, a) for c, a in got if isinstance(a, (int, float))]
    if len(got) < 2:
        return "The same runs, counted differently:"
    lo = min(got, key=lambda x: x[1])
    hi = max(got, key=lambda x: x[1])
    f = lambda c: fig(F, "by_convention", c, "L_N", "params", "alpha_N", fmt=".3g")  # noqa: E731
    if f(lo[0]) == f(hi[0]):
        return f"The same runs, counted differently, give the same L(N) exponent ({f(lo[0])}):"
    return (f"The same runs, counted differently, give L(N) exponents from {f(lo[0])} ({lo[0]}) to "
            f"{f(hi[0])} ({hi[0]}):")


def section_scaling(folder: Path, fig: Figures) -> list[str]:
    fits = _load(folder, "scaling/fits.json")
    summary_path = folder / "scaling" / "summary.csv"
    if fits is None and not summary_path.exists():
        return []
    lines = ["## Scaling laws on measured compute", ""]
    not_run = _load(folder, "scaling/not_run.json")
    if not_run:
        lines += [f"(Partial: {len(not_run['runs'])} runs of the ladder were not started "
                  f"({', '.join(not_run['runs'])}): {not_run.get('reason', '')}.)", ""]
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
                  "measured work are counted. " + _exponents_sentence(fig, F, convs),
                  "", _md_table(["convention", "alpha_N", "R^2 (log)", "alpha_C", "N_opt ~ C^a"], rows), ""]
        skipped = fits.get("skipped", [])
        if skipped:
            lines.append("Fits the sweep's data could not support:")
            lines += [f"- {s['fit']}" + (f" ({s['convention']})" if s.get("convention") else "")
                      + f": {s['reason']}" for s in skipped]
            lines.append("")
        warned = fits.get("warnings", [])
        if warned:   # what may make a fitted figure above mean less than it seems
            lines.append("Warnings of the fits (scaling.fitting.assess) and the runs left out:")
            lines += [f"- {fig(F, 'warnings', i, fmt='str')}" for i in range(len(warned))]
            lines.append("")
    lines += _images(folder, "scaling") + [""]
    return lines


def section_stages(folder: Path, fig: Figures, stages: tuple[str, ...]) -> list[str]:
    """The stages table and, one line each, what was shortened, skipped, fell back or is stale."""
    S = "stages.json"
    st = _load(folder, S) or {}
    known = [s for s in stages if s in st.get("stages", {})]
    lines = ["## Stages", ""]
    budget = st.get("budget_s")
    if budget is not None:
        lines.append(f"Run within a time budget of {fig(S, 'budget_s', fmt='.0f')} s "
                     f"(planned for {fig(S, 'plan', 'device', fmt='str')}); each stage had a cap, in "
                     f"priority order, and every result was written as it was made.")
        lines.append("")
    lines += ["Each stage records the run that made it (a resumed report keeps earlier stages):", "",
              _md_table(["stage", "status", "seconds", "cap (s)", "started", "git commit"],
                        [[s, fig(S, "stages", s, "status", fmt="str"),
                          fig(S, "stages", s, "seconds", fmt=".0f"),
                          fig(S, "stages", s, "cap_s", fmt=".0f") if st["stages"][s].get("cap_s") else "-",
                          fig(S, "stages", s, "date", fmt="str"),
                          fig(S, "stages", s, "git_commit", fmt="str")] for s in known]), ""]
    notes = []
    for s in known:
        info = st["stages"][s]
        for j, _ in enumerate(info.get("notes", [])):
            notes.append(f"- {s}: {fig(S, 'stages', s, 'notes', j, fmt='str')}")
        if info.get("stale"):
            notes.append(f"- {s}: stale: {fig(S, 'stages', s, 'stale', fmt='str')}")
        if info.get("error"):
            notes.append(f"- {s}: failed: {fig(S, 'stages', s, 'error', fmt='str')}")
    if notes:
        lines += ["Shortened, skipped, fallen back or stale:", "", *notes, ""]
    else:
        lines += ["Every stage ran in full.", ""]
    return lines


def mark_stale(lines: list[str], stage: str, info: dict | None, fig: Figures) -> list[str]:
    """A section whose stage failed in the last run: a warning under its heading, since what it
    shows was left in the folder by an earlier run (or the failed one) and is not this run's."""
    if not lines or not isinstance(info, dict) or info.get("status") != "failed":
        return lines
    S = "stages.json"
    banner = (f"> **Stale:** the {stage} stage failed in the run of "
              f"{fig(S, 'stages', stage, 'date', fmt='str')} "
              f"({fig(S, 'stages', stage, 'error', fmt='str')}). What this section shows was left in "
              f"the folder by an earlier run or by the failed one: it is not this run's result and "
              f"may be incomplete. Rerun `sixn report --stages {stage} --restart` to remake it.")
    return [lines[0], "", banner, *lines[1:]]


def write_report(folder: Path, plan: dict, prov: dict, stages: tuple[str, ...]) -> Path:
    """report.md and figures.json of the folder, from its files."""
    fig = Figures(folder)
    head = [
        f"# sixn report: {prov['device']}",
        "",
        f"Written by `{prov['command']}` on {prov['date']} (git {prov['git_commit']}); torch "
        f"{prov['torch']}, triton {prov['triton']}, driver {prov['driver']}, Python {prov['python']}."
        + (" Quick mode: small sizes, a smoke run." if plan.get("quick") else ""),
        "",
        "Every figure below is read from a CSV/JSON file in this folder (figures.json says which); "
        "the console output of each stage is in logs/.",
        "",
    ]
    ran = (_load(folder, "stages.json") or {}).get("stages", {})
    body: list[str] = []
    for stage, section in (("flops", section_flops), ("check", section_check),
                           ("kernels", section_kernels), ("bench", section_bench),
                           ("validate", section_validate), ("scaling", section_scaling)):
        body += mark_stale(section(folder, fig), stage, ran.get(stage), fig)
    tail = section_stages(folder, fig, stages)
    if plan["device"] == "cpu":
        tail += ["On a CPU this report has no GPU figures: no datasheet peak or MFU, no kernel timings "
                 "or GPU checks, no Nsight Compute counts. Run `sixn report` on a GPU for those.", ""]
    atomic_write_text(folder / "report.md", "\n".join(head + body + tail))
    write_json(folder / "figures.json", {"figures": fig.items}, prov)
    return folder / "report.md"
