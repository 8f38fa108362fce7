"""Fit scaling laws to any loss table: `sixn fit TABLE.csv`.

The table needs a column of parameter counts (N) and one of losses (loss, L or val_loss), and for
the Chinchilla form also tokens (D) or training compute (C, from which D = C / 6N). Column names
are case-insensitive. Fitted, with percentile-bootstrap intervals (--bootstrap at most 10000):

  L(N) = (N_c / N)^alpha_N          on each N's lowest loss (always)
  L = E + A/N^alpha + B/D^beta      Chinchilla approach 3, Huber (delta 1e-3) on log residuals,
                                    L-BFGS-B from a grid of starts (when D or C is given)
  N_opt ~ C^a                       a = beta / (alpha + beta) from that law, and empirically:
                                    the lowest-loss N of each compute budget (isoFLOP groups) or
                                    of the loss-compute frontier, fitted as N_opt = k C^a

IsoFLOP tables (Chinchilla's approach 2; detected, or chosen with --method isoflop): a column C
of compute budgets (rows within 2 % are one budget), N and loss, and D or D = C / 6N. Each
budget's loss against ln N is fitted by a parabola whose vertex is its N_opt (with a residual
bootstrap interval); then N_opt = k C^a and D_opt = k C^b over the budgets. A table is taken as
IsoFLOP when it has a C column, two or more budgets, and no budget of a single row. A budget with
fewer than 3 sizes is an error; a budget whose lowest loss is at its smallest or largest N is left
out with a warning (--strict: an error). The plot (--plot, default TABLE-isoflop.png next to the
table) shows the profiles, their minima and the fitted N_opt(C).

Warnings (stderr `sixn fit: warning: ...`, and the "warnings" list of --json; each fit's own list
too): an exponent that is not positive (the loss rises with N, say) or implausibly large, fewer
than 3 degrees of freedom, R^2 (log) below 0.9 (scaling.fitting.assess). The Chinchilla form is
refused, with a warning, when its optimum is degenerate (alpha or beta at 0).

Examples:
  sixn fit chinchilla_points.csv
  sixn fit table.csv --json --bootstrap 200 --seed 1
  sixn fit kaplan.csv --c-units pf-days
  sixn fit isoflop.csv --method isoflop --plot isoflop.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from sixn.bench import argtypes
from sixn.bench.errors import CLIError
from sixn.bench.results import fmt_number, read_table
from sixn.model.flops import PF_DAY, run_compute, tokens_from_compute
from sixn.scaling.chinchilla import fit_chinchilla
from sixn.scaling.compute_optimal import (IsoflopError, IsoflopRuns, approach2, budget_groups,
                                          check_isoflop_table)
from sixn.scaling.fitting import DEFAULT_BOOTSTRAP, cap_bootstrap
from sixn.scaling.kaplan import fit_L_N, fit_N_opt
from sixn.scaling.laws import Fit
from sixn.scaling.plots import plot_isoflop

ALIASES = {
    "N": ("n", "params", "n_params", "parameters"),
    "loss": ("loss", "l", "val_loss"),
    "D": ("d", "tokens", "n_tokens"),
    "C": ("c", "compute", "flops"),
}
MIN_N_POINTS = 3          # distinct N for L(N)
MIN_CHINCHILLA_ROWS = 6   # five constants and at least one residual
MIN_NOPT_POINTS = 3
ISOFLOP_TOL = 0.02        # compute budgets within 2 % are one isoFLOP group
fmt = partial(fmt_number, spec=".4g", missing="nan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", type=argtypes.readable_file,
                   help="CSV with columns N and loss (or L / val_loss), plus D or C")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--bootstrap", type=argtypes.nonneg_int, default=DEFAULT_BOOTSTRAP, metavar="B",
                   help="bootstrap resamples for the intervals (default %(default)s; 0: none)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="bootstrap seed (default %(default)s)")
    p.add_argument("--conv", default="6N", choices=["6N"],
                   help="how C relates to N and D: 6N means C = 6 N D (Kaplan, Chinchilla)")
    p.add_argument("--c-units", default="flops", choices=["flops", "pf-days"],
                   help="unit of the C column (default %(default)s)")
    p.add_argument("--method", default="auto", choices=["auto", "isoflop", "chinchilla"],
                   help="isoflop: approach 2 on IsoFLOP budgets; chinchilla: L(N), approach 3 and "
                        "the empirical N_opt; auto (default): isoflop for an IsoFLOP table")
    p.add_argument("--strict", action="store_true",
                   help="isoflop: refuse a budget whose minimum is at an edge instead of leaving "
                        "it out")
    p.add_argument("--plot", type=argtypes.output_file, metavar="PNG",
                   help="isoflop: where to draw the profiles (default TABLE-isoflop.png)")
    p.add_argument("--no-plot", action="store_true", help="isoflop: draw no plot")
    p.add_argument("--full-grid", action="store_true",
                   help="run L-BFGS-B from every point of Hoffmann's 4500-point start grid "
                        "(default: from the 64 best by the objective)")


def _match_columns(fields: list[str]) -> dict[str, str]:
    lower = {f.strip().lower(): f for f in fields}
    out = {}
    for key, names in ALIASES.items():
        for n in names:
            if n in lower:
                out[key] = lower[n]
                break
    return out


def _column(table: pd.DataFrame, name: str, what: str) -> np.ndarray:
    cells = table[name].fillna("").str.strip()
    vals = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
    bad = [f"{i} ({c!r})" if c else f"{i} (empty)"
           for i, (c, v) in enumerate(zip(cells, vals), start=1) if not (math.isfinite(v) and v > 0)]
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise CLIError(f"column {name!r} ({what}) must hold positive numbers; non-positive, NaN or "
                       f"unreadable values at data rows {', '.join(bad[:10])}{more}")
    return vals


def load_table(path: str | Path, c_units: str = "flops") -> dict:
    """N, loss and (when given) D and C of a loss table, checked; CLIError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        table = read_table(path, text=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise CLIError(f"{path}: cannot read as CSV: {e}") from None
    fields = [str(c) for c in table.columns]
    cols = _match_columns(fields)
    missing = [k for k in ("N", "loss") if k not in cols]
    if missing:
        need = "; ".join(f"{k} (named {' / '.join(ALIASES[k])})" for k in missing)
        raise CLIError(f"{path}: missing column(s) {need}. A table needs N and loss, plus D or C "
                       f"for the Chinchilla form; found columns: {', '.join(fields) or 'none'}")
    if table.empty:
        raise CLIError(f"{path}: the table has no rows")
    out = {"path": str(path), "columns": dict(cols), "n_rows": len(table), "C_given": "C" in cols,
           "N": _column(table, cols["N"], "parameters"),
           "loss": _column(table, cols["loss"], "loss")}
    if "C" in cols:
        out["C"] = _column(table, cols["C"], f"compute, {c_units}") * (PF_DAY if c_units == "pf-days"
                                                                    else 1.0)
    if "D" in cols:
        out["D"] = _column(table, cols["D"], "tokens")
    elif "C" in cols:
        out["D"] = tokens_from_compute(out["C"], out["N"])
    if "D" in out and "C" not in out:
        out["C"] = run_compute(out["N"], out["D"])
    return out


def _best_per_N(N: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.unique(N)
    return u, np.array([L[N == n].min() for n in u])


def empirical_n_opt(C: np.ndarray, N: np.ndarray, L: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Compute-optimal points of a table: the lowest-loss N of each isoFLOP group when there are
    at least 3 groups of 3 or more rows, else the loss-compute frontier (points no cheaper point
    beats). Returns (method, C, N_opt)."""
    o = np.argsort(C, kind="stable")
    Cs, Ns, Ls = C[o], N[o], L[o]
    groups, start = [], 0
    for i in range(1, len(Cs) + 1):
        if i == len(Cs) or Cs[i] > Cs[start] * (1 + ISOFLOP_TOL):
            groups.append(np.arange(start, i))
            start = i
    big = [g for g in groups if g.size >= 3 and np.unique(Ns[g]).size >= 3]
    if len(big) >= MIN_NOPT_POINTS:
        c = np.array([np.exp(np.log(Cs[g]).mean()) for g in big])
        n = np.array([Ns[g][np.argmin(Ls[g])] for g in big])
        return "isoflop", c, n
    keep = np.zeros(len(Cs), bool)
    best = math.inf
    for i in range(len(Cs)):
        if Ls[i] < best:
            keep[i] = True
            best = Ls[i]
    return "frontier", Cs[keep], Ns[keep]


def fit_table(t: dict, n_boot: int, seed: int, full_grid: bool = False) -> dict:
    N, L = t["N"], t["loss"]
    res: dict = {"table": t["path"], "columns": t["columns"], "n": int(N.size),
                 "bootstrap": n_boot, "seed": seed, "fits": {}}
    uN, bestL = _best_per_N(N, L)
    if uN.size < MIN_N_POINTS:
        raise CLIError(f"too few points: L(N) needs at least {MIN_N_POINTS} distinct N values, "
                       f"the table has {uN.size}")
    res["fits"]["L_N"] = fit_L_N(uN, bestL, n_boot=n_boot, seed=seed)
    chin = None
    if "D" in t:
        D = t["D"]
        hint = f" (leave out the {t['columns'].get('D') or t['columns'].get('C')} column to fit L(N) alone)"
        if N.size < MIN_CHINCHILLA_ROWS:
            raise CLIError(f"too few points: the Chinchilla form needs at least "
                           f"{MIN_CHINCHILLA_ROWS} rows with D, the table has {N.size}{hint}")
        for name, x in (("N", N), ("D", D)):
            if np.unique(x).size < 2:
                raise CLIError(f"too few points: the Chinchilla form needs at least 2 distinct "
                               f"values of {name}, the table has 1{hint}")
        try:
            chin = fit_chinchilla(N, D, L, n_boot=n_boot, seed=seed,
                                  n_polish=None if full_grid else 64)
            res["fits"]["chinchilla"] = chin
        except ValueError as e:  # a degenerate optimum: refused, said, and the rest still shown
            res["fits"]["chinchilla"] = {"skipped": True, "reason": str(e)}
        method, c, n = empirical_n_opt(t["C"], N, L)
        if np.unique(c).size >= 2 and c.size >= MIN_NOPT_POINTS:
            f = fit_N_opt(c, n, n_boot=n_boot, seed=seed, notes=f"empirical ({method})")
            res["fits"]["N_opt_empirical"] = f
        else:
            res["fits"]["N_opt_empirical"] = {
                "skipped": True, "reason": f"{method}: {c.size} compute-optimal points, "
                                           f"needs {MIN_NOPT_POINTS} at 2 or more budgets"}
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        res[k] = chin.params[k] if chin else None
    res["intervals"] = {k: list(chin.intervals[k]) for k in ("E", "A", "B", "alpha", "beta", "a",
                                                             "b", "G")} if chin else {}
    emp = res["fits"].get("N_opt_empirical")
    res["a_empirical"] = emp.params["a"] if isinstance(emp, Fit) else None
    return res


def collect_warnings(res: dict) -> list[str]:
    """Every fit's warnings, and every refused or skipped fit, as lines `<fit>: <warning>`."""
    out = []
    for name, f in res.get("fits", {}).items():
        if isinstance(f, Fit):
            out += [f"{name}: {w}" for w in f.warnings]
        elif isinstance(f, dict) and f.get("skipped") and name == "chinchilla":
            out.append(f"{name}: refused: {f['reason']}")
    return out


def _clean(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, Fit):
        return _clean(o.to_dict())
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def _text(res: dict) -> str:
    lines = [f"{res['table']}: {res['n']} rows; columns "
             + ", ".join(f"{k}={v}" for k, v in res["columns"].items())
             + f"; bootstrap {res['bootstrap']} (seed {res['seed']}), intervals 2.5-97.5 %"]
    for name, f in res["fits"].items():
        lines.append("")
        if isinstance(f, Fit):
            lines.append(f"{name} ({f.n} points, R^2 log {fmt(f.r2_log)}): {f.form}")
            for k, v in f.params.items():
                lo, hi = f.intervals[k]
                lines.append(f"  {k:<10} {fmt(v):>12}   [{fmt(lo)}, {fmt(hi)}]")
            if f.notes:
                lines.append(f"  ({f.notes})")
            lines += [f"  warning: {w}" for w in f.warnings]
        else:
            lines.append(f"{name}: skipped ({f['reason']})")
    if res.get("a") is not None:
        lo, hi = res["intervals"]["a"]
        lines.append("")
        lines.append(f"N_opt ~ C^a with a = beta/(alpha+beta) = {fmt(res['a'])} "
                     f"[{fmt(lo)}, {fmt(hi)}]"
                     + (f"; empirical a = {fmt(res['a_empirical'])}"
                        if res.get("a_empirical") is not None else ""))
    return "\n".join(lines)


def is_isoflop_table(t: dict) -> bool:
    """A C column (not derived from D), two or more budgets and no budget of a single row."""
    if not t.get("C_given"):
        return False
    g = budget_groups(t["C"], ISOFLOP_TOL)
    counts = np.bincount(g)
    return counts.size >= 2 and counts.min() >= 2


def fit_isoflop(t: dict, n_boot: int, seed: int, strict: bool = False) -> tuple[dict, object]:
    """Approach 2 on an IsoFLOP table: (the result dict, the ComputeOptimal for the plot)."""
    if not t.get("C_given"):
        raise CLIError(f"{t['path']}: an IsoFLOP table needs a compute column C (named "
                       f"{' / '.join(ALIASES['C'])}), the budget of each run")
    try:
        runs = IsoflopRuns(t["N"], t["D"], t["loss"], {"6N": t["C"]}, "6N",
                           sizes_from_compute=False)
        r = approach2(runs, n_boot=n_boot, seed=seed)["6N"]
        check_isoflop_table(runs, r.profiles)
    except IsoflopError as e:
        raise CLIError(str(e)) from None
    edges = [p for p in r.profiles if not p.ok]
    if edges and strict:
        raise CLIError("--strict: " + "; ".join(f"budget C = {p.C:.4g}: {p.reason}" for p in edges))
    if r.N_opt is None:
        raise CLIError("approach 2 needs at least 2 budgets with a bracketed minimum; "
                       + "; ".join(f"budget C = {p.C:.4g}: {p.reason}" for p in edges))
    res = {"table": t["path"], "columns": t["columns"], "n": int(t["N"].size), "method": "isoflop",
           "bootstrap": n_boot, "bootstrap_used": r.N_opt.n_boot, "seed": seed,
           "a": r.N_opt.params["a"], "b": r.D_opt.params["b"],
           "intervals": {"a": list(r.N_opt.intervals["a"]), "b": list(r.D_opt.intervals["b"])},
           "budgets": [p.to_dict() for p in r.profiles], "excluded": r.excluded,
           "fits": {"N_opt": r.N_opt, "D_opt": r.D_opt}, "notes": r.notes}
    return res, r


def _isoflop_text(res: dict) -> str:
    lo, hi = res["intervals"]["a"]
    blo, bhi = res["intervals"]["b"]
    lines = [f"{res['table']}: {res['n']} rows, {len(res['budgets'])} budgets; columns "
             + ", ".join(f"{k}={v}" for k, v in res["columns"].items())
             + f"; approach 2 (IsoFLOP profiles), bootstrap {res['bootstrap_used']} "
               f"(seed {res['seed']}), intervals 2.5-97.5 %", "",
             f"  {'budget C':>12} {'sizes':>5} {'N_opt':>12} {'[2.5 %, 97.5 %]':>26} "
             f"{'D_opt':>12} {'loss':>8}"]
    for p in res["budgets"]:
        if p["status"] == "ok":
            ilo, ihi = p["N_opt_interval"]
            lines.append(f"  {fmt(p['C']):>12} {p['n_sizes']:>5} {fmt(p['N_opt']):>12} "
                         f"{'[' + fmt(ilo) + ', ' + fmt(ihi) + ']':>26} {fmt(p['D_opt']):>12} "
                         f"{fmt(p['loss_opt']):>8}")
        else:
            lines.append(f"  {fmt(p['C']):>12} {p['n_sizes']:>5}   left out: {p['reason']}")
    lines += ["", f"N_opt ~ C^a: a = {fmt(res['a'])} [{fmt(lo)}, {fmt(hi)}]",
              f"D_opt ~ C^b: b = {fmt(res['b'])} [{fmt(blo)}, {fmt(bhi)}]",
              f"({res['notes']})"]
    if res.get("plot"):
        lines.append(f"plot: {res['plot']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    n_boot, capped = cap_bootstrap(args.bootstrap)
    if capped:
        print(f"sixn fit: warning: {capped}", file=sys.stderr)
    args.bootstrap = n_boot
    t = load_table(args.table, args.c_units)
    method = args.method
    if method == "auto":
        method = "isoflop" if is_isoflop_table(t) else "chinchilla"
    if method == "isoflop":
        res, r = fit_isoflop(t, args.bootstrap, args.seed, args.strict)
        for e in res["excluded"]:
            print(f"sixn fit: warning: budget C = {e['C']:.4g} left out: {e['reason']}",
                  file=sys.stderr)
        if not args.no_plot:
            path = args.plot or Path(args.table).with_name(Path(args.table).stem + "-isoflop.png")
            res["plot"] = str(plot_isoflop([(r, f"{Path(args.table).name}: C = 6ND")], path))
    else:
        res = fit_table(t, args.bootstrap, args.seed, args.full_grid)
        res["method"] = "chinchilla"
    res["conv"] = args.conv
    res["warnings"] = ([capped] if capped else []) + [
        f"budget C = {e['C']:.4g} left out: {e['reason']}" for e in res.get("excluded", [])] + \
        collect_warnings(res)
    for w in res["warnings"][(1 if capped else 0) + len(res.get("excluded", [])):]:
        print(f"sixn fit: warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(_clean(res), indent=2))
    else:
        print(_isoflop_text(res) if method == "isoflop" else _text(res))
    return 0
