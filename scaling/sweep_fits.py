"""Every fit a sweep's tables support, under each compute convention side by side.

fit_sweep(sweep_dir) reads <sweep>/curves.csv and <sweep>/summary.csv (summary is derived from
curves when absent), fits, and writes <sweep>/fits.json and <sweep>/fits.csv. Fits the data cannot
support are listed under "skipped" with the reason. The steps:

  load_sweep_tables     the tables and the compute conventions present in them
  independent_fits      laws that do not depend on how compute is counted: B_crit(L) from every
                        evaluation with a b_simple (tokens); L(D) from the data-limited runs
                        (kind "data") of their largest model; L(N, S) from the ladder's evaluations
                        past 20 % of each run
  convention_fits       per convention: L(N) on the ladder's best validation losses; L(N, D) and
                        Chinchilla approach 3 on every ladder and data run (D the dataset size,
                        the best, early-stopped, loss); the C_min envelope of the ladder's learning
                        curves, L(C_min) and N_opt(C) along it
  compute_optimal_fits  per convention: Chinchilla's approach 1 (the learning curves' envelope)
                        and, for an IsoFLOP sweep (runs of kind "isoflop"), approach 2 (IsoFLOP
                        profiles; scaling.compute_optimal), with a summary of the exponents a and b
                        and of the paired differences of a between conventions
  comparison_table      one row per fitted constant, next to the published value

Where a law needs a parameter count, it uses the count the convention implies,
N_eff = C / (6 D) (model.flops.params_from_compute), so C = 6 N_eff D holds in every convention and
kaplan_6N gives back Kaplan's non-embedding N. One-layer runs are left out of every fit (Kaplan),
and so are runs that diverged (runs/<run>/diverged.json), listed under "excluded_runs". Every
fit's warnings (scaling.fitting.assess) are collected under "warnings".
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from sixn.bench.errors import CorruptFile
from sixn.bench.results import read_json, write_csv, write_json
from sixn.model.flops import params_from_compute
from sixn.scaling.chinchilla import fit_chinchilla
from sixn.scaling.compute_optimal import (ComputeOptimal, IsoflopError, IsoflopRuns, approach1,
                                          approach2, budget_groups, exponent_difference)
from sixn.scaling.envelope import Envelope, cmin_envelope
from sixn.scaling.fitting import DEFAULT_BOOTSTRAP
from sixn.scaling.kaplan import fit_B_crit, fit_L_Cmin, fit_L_D, fit_L_N, fit_L_ND, fit_L_NS, fit_N_opt
from sixn.scaling.laws import LAWS, PUBLISHED, Fit
from sixn.scaling.runstate import read_diverged
from sixn.scaling.tables import (CONVENTION_COLUMNS, Table, col, dataset_size, final_loss,
                                 finite_pos, kinds, present_conventions, read_table, run_names,
                                 select, summary_from_curves)


class Skip(Exception):
    """A fit the data cannot support; its message is the reason recorded under "skipped"."""


@dataclass(frozen=True)
class FitOptions:
    n_boot: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    chinchilla_polish: int | None = 64   # L-BFGS-B starts for approach 3 (None: the whole grid)


@dataclass
class SweepTables:
    sweep: Path
    curves: Table | None
    summary: Table
    conventions: list[str]
    meta: dict = field(default_factory=dict)   # sweep.json, when the folder has one
    excluded: list[dict] = field(default_factory=list)   # runs left out: {"run", "reason"}

    @property
    def isoflop(self) -> dict | None:
        """The IsoFLOP design of the plan (budgets, budget_convention), if it is one."""
        return (self.meta.get("plan") or {}).get("isoflop")


@dataclass
class _Skipped:
    """Collects the fits that were skipped, with the reason, while fits are attempted."""
    rows: list

    def attempt(self, slot: dict, name: str, conv: str | None, fn: Callable[[], object]) -> None:
        try:
            slot[name] = fn()
        except (Skip, ValueError) as e:
            slot[name] = {"skipped": True, "reason": str(e)}
            self.rows.append({"fit": name, "convention": conv, "reason": str(e)})


def load_sweep_tables(sweep_dir: str | Path) -> SweepTables:
    """curves.csv and summary.csv of a sweep (summary derived from curves when missing) and the
    conventions with compute in them, in CONVENTION_COLUMNS order."""
    sweep = Path(sweep_dir)
    cpath, spath = sweep / "curves.csv", sweep / "summary.csv"
    if not cpath.exists() and not spath.exists():
        raise ValueError(f"{sweep}: neither curves.csv nor summary.csv found; run `sixn scale` first")
    curves = read_sweep_table(cpath, CURVES_NUMERIC) if cpath.exists() else None
    summary = (read_sweep_table(spath, SUMMARY_NUMERIC) if spath.exists()
               else summary_from_curves(curves))
    excluded = diverged_runs(sweep)
    if excluded:  # a diverged run's partial curve is not a learning curve of the law
        gone = np.array([e["run"] for e in excluded])
        curves = None if curves is None else _drop_runs(curves, gone)
        summary = _drop_runs(summary, gone)
    found = set(present_conventions(summary))
    if curves is not None:
        found |= set(present_conventions(curves))
    meta = {}
    if (sweep / "sweep.json").exists():
        meta = read_json(sweep / "sweep.json", what="the sweep's plan", remedy=TABLE_REMEDY)
    return SweepTables(sweep, curves, summary, [c for c in CONVENTION_COLUMNS if c in found], meta,
                       excluded)


# Columns of the sweep tables that hold numbers in every row sixn writes.
CURVES_NUMERIC = ("step", "tokens", "val_loss", "N")
SUMMARY_NUMERIC = ("N", "D", "val_loss")
TABLE_REMEDY = ("rerun the sweep's `sixn scale` command: it rewrites the tables from the runs' "
                "logs (runs/<run>/log.csv)")


def read_sweep_table(path: Path, numeric: tuple[str, ...]) -> Table:
    """A sweep table (tables.read_table), checked: CorruptFile naming the file when it is not a
    CSV table or a column of `numeric` holds something that is not a number (a cut or edited
    file; the sweep rewrites its tables from the runs' logs)."""
    try:
        with open(path, newline="") as f:
            widths = [len(row) for row in csv.reader(f) if row]
        short = next((i for i, w in enumerate(widths[1:], start=2) if w != widths[0]), None)
        if short is not None:   # tables are written whole: a row of another width is damage
            raise CorruptFile(path, f"line {short} has {widths[short - 1]} fields, the header "
                                    f"{widths[0]} (the table was cut or edited)", TABLE_REMEDY)
        t = read_table(path)
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise CorruptFile(path, f"not a readable CSV table ({first})", TABLE_REMEDY) from None
    for c in numeric:
        if c in t and t[c].dtype.kind != "f":
            cells = np.asarray(t[c]).astype(str)
            bad = [i for i, v in enumerate(cells) if not _is_number(v)] or [0]
            raise CorruptFile(path, f"column {c!r} holds {cells[bad[0]]!r} at data row "
                                    f"{bad[0] + 1} where a number belongs", TABLE_REMEDY)
    return t


def _is_number(v: str) -> bool:
    try:
        return math.isfinite(float(v))
    except ValueError:
        return v.strip() == ""


def diverged_runs(sweep: Path) -> list[dict]:
    """The runs of the folder that diverged (runs/<run>/diverged.json: a non-finite loss, or a
    final loss worse than the uniform guess), with the reason: they are left out of every fit."""
    out = []
    for p in sorted((sweep / "runs").glob("*/diverged.json")):
        d = read_diverged(p)
        out.append({"run": d["run"], "reason": d.get("reason", "non_finite_loss"),
                    "step": d["step"], "message": d["message"]})
    return out


def _drop_runs(t: Table, runs: np.ndarray) -> Table:
    keep = ~np.isin(run_names(t), runs)
    return {k: np.asarray(v)[keep] for k, v in t.items()}


def sweep_warnings(result: Mapping) -> list[str]:
    """Every fit's warnings (`<fit> (<convention>): <warning>`) and the runs left out."""
    out = [f"run {e['run']} left out of the fits: it diverged ({e['reason']} at step {e['step']})"
           for e in result.get("excluded_runs", [])]
    slots = [(None, result.get("independent", {}))] + list(result.get("by_convention", {}).items())
    for conv, slot in slots:
        for name, f in slot.items():
            fits = [f] if isinstance(f, Fit) else (
                [x for x in (f.N_opt, f.D_opt) if x is not None]
                if isinstance(f, ComputeOptimal) else [])
            for fit in fits:
                where = f"{name}" + (f" {fit.law}" if fit.law != name else "") + (
                    f" ({conv})" if conv else "")
                out += [f"{where}: {w}" for w in fit.warnings]
    return out


def independent_fits(t: SweepTables, opts: FitOptions, skipped: _Skipped) -> dict:
    """B_crit(L), L(D) and L(N, S): the laws that do not depend on the compute convention."""
    out: dict = {}
    curves, summary = t.curves, t.summary
    kw = {"n_boot": opts.n_boot, "seed": opts.seed}

    def bcrit():
        if curves is None or "b_simple" not in curves:
            raise Skip("no b_simple column in curves.csv")
        b, L = np.asarray(curves["b_simple"], float), np.asarray(curves["val_loss"], float)
        m = finite_pos(b, L)
        if m.sum() < 3:
            raise Skip(f"needs at least 3 evaluations with b_simple, got {int(m.sum())}")
        return fit_B_crit(b[m], L[m], **kw)
    skipped.attempt(out, "B_crit", None, bcrit)
    bfit = out["B_crit"] if isinstance(out["B_crit"], Fit) else None

    def ld():
        kind = kinds(summary)
        Dd, loss, N = dataset_size(summary), final_loss(summary), col(summary, "N")
        m = (kind == "data") & finite_pos(Dd, loss, N)
        if not m.any():
            raise Skip("no data-limited runs (kind 'data') in summary.csv")
        m &= N == N[m].max()
        return fit_L_D(Dd[m], loss[m], **kw)
    skipped.attempt(out, "L_D", None, ld)

    def lns():
        if bfit is None:
            raise Skip("needs a B_crit fit for S_min (eq. 5.4)")
        c = curves
        step = col(c, "step")
        run = run_names(c)
        last = {r: np.nanmax(step[run == r]) for r in set(run)}
        late = step >= 0.2 * np.array([last[r] for r in run])
        m = select(c, ("ladder",)) & late & finite_pos(step, col(c, "batch_tokens"),
                                                       col(c, "val_loss"), col(c, "N"))
        return fit_L_NS(c["N"][m], step[m], c["batch_tokens"][m], c["val_loss"][m], bfit, **kw)
    skipped.attempt(out, "L_NS", None, lns)
    return out


def convention_fits(t: SweepTables, conv: str, bfit: Fit | None, opts: FitOptions,
                    skipped: _Skipped) -> dict:
    """L(N), L(N, D), Chinchilla approach 3, the C_min envelope, L(C_min) and N_opt(C) under one
    compute convention."""
    out: dict = {}
    summary, curves = t.summary, t.curves
    kw = {"n_boot": opts.n_boot, "seed": opts.seed, "convention": conv}
    loss, D, Dd = final_loss(summary), col(summary, "D"), dataset_size(summary)
    with np.errstate(all="ignore"):
        Neff = params_from_compute(col(summary, CONVENTION_COLUMNS[conv]), D)
    ladder = select(summary, ("ladder",)) & finite_pos(Neff, loss)

    both = select(summary, ("ladder", "data", "isoflop")) & finite_pos(Neff, Dd, loss)

    skipped.attempt(out, "L_N", conv, lambda: fit_L_N(Neff[ladder], loss[ladder], **kw))
    skipped.attempt(out, "L_ND", conv, lambda: fit_L_ND(Neff[both], Dd[both], loss[both], **kw))
    skipped.attempt(out, "chinchilla", conv, lambda: fit_chinchilla(
        Neff[both], Dd[both], loss[both], n_polish=opts.chinchilla_polish, **kw))

    def env():
        if curves is None:
            raise Skip("no curves.csv")
        return cmin_envelope(curves, conv, bfit, kinds=("ladder", "isoflop"))
    skipped.attempt(out, "envelope", conv, env)
    e = out["envelope"] if isinstance(out["envelope"], Envelope) else None
    note = ("C_min by eq. 5.5 from the B_crit fit" if bfit is not None
            else "no B_crit fit: C as counted, not C_min")

    def lc():
        if e is None:
            raise Skip("no C_min envelope")
        u = e.usable
        return fit_L_Cmin(e.C[u], e.loss[u], notes=note, **kw)
    skipped.attempt(out, "L_Cmin", conv, lc)

    def nopt():
        if e is None:
            raise Skip("no C_min envelope")
        u = e.interior
        if np.unique(e.N_eff[u]).size < 2:
            raise Skip(f"the envelope has {np.unique(e.N_eff[u]).size} model size(s) lowest "
                       f"away from the ends of the ladder; N_opt(C) needs 2 or more")
        return fit_N_opt(e.C[u], e.N_eff[u], notes=note + "; N of the lowest run at each compute, "
                         "points where the smallest or largest model is lowest left out (censored)",
                         **kw)
    skipped.attempt(out, "N_opt", conv, nopt)
    return out


def isoflop_designs(t: SweepTables) -> dict[str, IsoflopRuns]:
    """The finished IsoFLOP runs of a sweep as approach 2 reads them, one set per budget
    convention: non-embedding N, tokens D, the final validation loss (the loss at the budget,
    where the schedule ends) and the compute of every convention. Each run's budget and budget
    convention come from sweep.json; without them, every IsoFLOP run is taken as one design in
    the convention whose compute falls into the fewest budgets. Raises Skip when there are none."""
    s = t.summary
    m = (kinds(s) == "isoflop") & finite_pos(col(s, "N"), col(s, "D"), col(s, "val_loss"))
    if not m.any():
        raise Skip("no IsoFLOP runs (kind 'isoflop') in summary.csv")
    planned = {r["name"]: (r.get("budget"), r.get("budget_convention"))
               for r in t.meta.get("runs", []) if r.get("budget")}
    names = run_names(s)
    C = {c: col(s, CONVENTION_COLUMNS[c]).astype(float) for c in t.conventions}
    C = {c: v for c, v in C.items() if finite_pos(v[m]).all()}
    if not C:
        raise Skip("no compute convention has a value for every IsoFLOP run")
    conv_of = np.array([planned.get(n, (None, None))[1] or "" for n in names])
    budget_of = np.array([planned.get(n, (math.nan, None))[0] or math.nan for n in names], float)
    if not (conv_of[m] != "").any():  # no plan: one design, detected
        conv = min(C, key=lambda c: np.unique(budget_groups(C[c][m])).size)
        conv_of = np.where(m, conv, "")
        budget_of = np.full(names.size, math.nan)
    out = {}
    for conv in dict.fromkeys(conv_of[m]):
        k = m & (conv_of == conv)
        if conv not in C:
            raise Skip(f"the budget convention {conv!r} has no compute column for every "
                       f"IsoFLOP run")
        b = budget_of[k]
        budget = (np.unique(b, return_inverse=True)[1] if np.isfinite(b).all() else None)
        out[conv] = IsoflopRuns(col(s, "N")[k].astype(float), col(s, "D")[k].astype(float),
                                col(s, "val_loss")[k].astype(float), {c: v[k] for c, v in C.items()},
                                conv, budget)
    return out


def compute_optimal_fits(t: SweepTables, opts: FitOptions, skipped: _Skipped,
                         by_convention: dict) -> dict:
    """Approach 1 (and approach 2 for IsoFLOP runs) under every convention, into by_convention;
    returns the summary: exponents side by side and differences of a between conventions.
    Approach 2 under a convention that was a budget convention uses that design's measured
    profiles; under any other, the profiles rebuilt from the first design's runs."""
    summary: dict = {"approach1": {}, "approach2": {}, "designs": {}, "differences": {}}
    kw = {"n_boot": opts.n_boot, "seed": opts.seed}
    for conv in t.conventions:
        def a1(conv=conv):
            if t.curves is None:
                raise Skip("no curves.csv")
            r = approach1(cmin_envelope(t.curves, conv, None, kinds=("ladder", "isoflop")), **kw)
            if r.N_opt is None:
                raise Skip(r.reason)
            return r
        skipped.attempt(by_convention[conv], "approach1", conv, a1)
    try:
        designs = isoflop_designs(t)
        results = {y: approach2(runs, list(runs.C), **kw) for y, runs in designs.items()}
    except (Skip, IsoflopError) as e:
        for conv in t.conventions:
            skipped.attempt(by_convention[conv], "approach2", conv, lambda e=e: _raise(e))
        results = {}
    chosen: dict[str, ComputeOptimal] = {}
    for conv in t.conventions if results else []:
        src = conv if conv in results else next(iter(results))
        r = results[src].get(conv)
        if r is None:
            skipped.attempt(by_convention[conv], "approach2", conv, lambda: _raise(
                Skip("not every IsoFLOP run has this convention's compute")))
        elif r.N_opt is None:
            by_convention[conv]["approach2_profiles"] = r
            skipped.attempt(by_convention[conv], "approach2", conv, lambda r=r: _raise(
                Skip(r.reason)))
        else:
            by_convention[conv]["approach2"] = chosen[conv] = r
    summary["budget_conventions"] = list(results)
    for y, res in results.items():
        summary["designs"][y] = {c: _exponents(r) for c, r in res.items() if r.N_opt is not None}
    for method in ("approach1", "approach2"):
        for conv in t.conventions:
            r = by_convention[conv].get(method)
            if isinstance(r, ComputeOptimal):
                summary[method][conv] = _exponents(r)
    if "kaplan_6N" in chosen:
        for c in chosen:
            if c != "kaplan_6N":
                summary["differences"][f"kaplan_6N - {c}"] = exponent_difference(
                    chosen, "kaplan_6N", c)
    return summary


def _exponents(r: ComputeOptimal) -> dict:
    m = r.N_model_opt
    return {"a": r.N_opt.params["a"], "a_interval": list(r.N_opt.intervals["a"]),
            "b": r.D_opt.params["b"], "b_interval": list(r.D_opt.intervals["b"]),
            "a_N": m.params["a"] if m is not None else None,
            "a_N_interval": list(m.intervals["a"]) if m is not None else None,
            "n_points": r.N_opt.n, "rebuilt": r.rebuilt, "n_boot": r.N_opt.n_boot}


def _raise(e: Exception):
    raise e


def fit_sweep(sweep_dir: str | Path, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              write: bool = True, chinchilla_polish: int | None = 64) -> dict:
    """Every fit the sweep's tables support, for each compute convention side by side; the dict
    holds Fit and Envelope objects (their bootstrap draws kept for plots) and is what fits.json
    holds (write=True)."""
    opts = FitOptions(n_boot, seed, chinchilla_polish)
    t = load_sweep_tables(sweep_dir)
    skipped = _Skipped([])
    out: dict = {"sweep": str(t.sweep), "conventions": t.conventions, "n_boot": n_boot,
                 "seed": seed, "independent": {}, "by_convention": {}, "skipped": [],
                 "published": PUBLISHED}
    out["independent"] = independent_fits(t, opts, skipped)
    bfit = out["independent"]["B_crit"]
    bfit = bfit if isinstance(bfit, Fit) else None
    out["by_convention"] = {c: convention_fits(t, c, bfit, opts, skipped) for c in t.conventions}
    out["compute_optimal"] = compute_optimal_fits(t, opts, skipped, out["by_convention"])
    out["skipped"] = skipped.rows
    out["excluded_runs"] = t.excluded
    out["warnings"] = sweep_warnings(out)
    out["comparison"] = comparison_table(out)
    if write:
        write_fits(out, t.sweep)
    return out


def comparison_table(result: Mapping) -> list[dict]:
    """Rows (fit, param, convention, ours, lo, hi, published, source) for every fitted constant."""
    rows = []
    published: dict = {}
    for src, fits in PUBLISHED.items():
        for fit, ps in fits.items():
            for k, v in ps.items():
                published.setdefault((fit, k), (v, src))

    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)

    slots = [(None, result.get("independent", {}))] + list(result.get("by_convention", {}).items())
    for conv, slot in slots:
        for name, f in list(slot.items()):
            if isinstance(f, ComputeOptimal) and name in ("approach1", "approach2"):
                for fit in (f.N_opt, f.D_opt):  # N_opt of N_eff, the convention's count
                    for k, v in fit.params.items():
                        pv, src = published.get((name, k), (None, ""))
                        lo, hi = fit.intervals.get(k, (math.nan, math.nan))
                        rows.append({"fit": f"{name} {fit.law}", "law": fit.form,
                                     "convention": conv, "param": k, "value": clean(v),
                                     "lo": clean(lo), "hi": clean(hi), "n": fit.n,
                                     "r2_log": clean(fit.r2_log), "published": pv, "source": src,
                                     "status": "ok", "reason": ""})
            elif isinstance(f, Fit):
                for k, v in f.params.items():
                    pv, src = published.get((name, k), (None, ""))
                    lo, hi = f.intervals.get(k, (math.nan, math.nan))
                    rows.append({"fit": name, "law": f.form, "convention": conv or "independent",
                                 "param": k, "value": clean(v), "lo": clean(lo), "hi": clean(hi),
                                 "n": f.n, "r2_log": clean(f.r2_log), "published": pv, "source": src,
                                 "status": "ok", "reason": ""})
            elif isinstance(f, dict) and f.get("skipped"):
                rows.append({"fit": name, "law": LAWS[name].form if name in LAWS else "",
                             "convention": conv or "independent", "param": "", "value": None,
                             "lo": None, "hi": None, "n": 0, "r2_log": None, "published": None,
                             "source": "", "status": "skipped", "reason": f["reason"]})
    return rows


def write_fits(result: Mapping, sweep_dir: str | Path) -> tuple[Path, Path]:
    """fits.json (the whole result) and fits.csv (the comparison table) in the sweep folder."""
    sweep = Path(sweep_dir)
    j = write_json(sweep / "fits.json", dict(result))
    c = write_csv(sweep / "fits.csv", [
        {k: ("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
         for k, v in r.items()} for r in result.get("comparison") or comparison_table(result)])
    return j, c
