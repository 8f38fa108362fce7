"""Kaplan-style figures of a scaling sweep, drawn from its tables and fits (matplotlib, Agg).

plot_sweep(sweep_dir) draws every figure the sweep's data supports and writes PNGs next to the
tables. The figures that depend on how compute is counted have two panels side by side: Kaplan's
6N and the measured compute (the full-model count, labelled so, when nothing was measured).

  fig_learning_curves.png   loss against compute, every run, with the C_min envelope and L(C_min)
  fig_loss_vs_N.png         final loss against N (as each convention counts it) with L(N)
  fig_loss_vs_D.png         data-limited runs: loss against tokens with L(N, D) and L(D)
  fig_nopt_vs_C.png         compute-optimal N against compute, N_opt = k C^a and Chinchilla's
  fig_shape.png             experiments, when present: loss spread against aspect ratio
  fig_sample_efficiency.png loss against tokens for each size
  fig_transfer.png          transfer loss against validation loss
  fig_isoflop.png           IsoFLOP sweeps: the profiles (loss against N per budget) with their
                            parabolas and minima, and N_opt(C) with its fit, per convention

Fitted laws are in the legends; shaded bands are 2.5-97.5 % bootstrap bands of the fits.
"""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import (LogFormatterSciNotation, LogLocator, NullFormatter,
                               ScalarFormatter)

from sixn.bench.results import atomic_path, provenance
from sixn.model.flops import PF_DAY, params_from_compute
from sixn.scaling.compute_optimal import ComputeOptimal
from sixn.scaling.envelope import Envelope
from sixn.scaling.laws import Fit, c_min, chinchilla_N_opt, fmt_value
from sixn.scaling.sweep_fits import fit_sweep, load_sweep_tables
from sixn.scaling.tables import (CONVENTION_COLUMNS, col, dataset_size, final_loss, finite_pos,
                                 kinds, nrows, run_names, select)

LABELS = {"kaplan_6N": "6N compute (Kaplan)", "kaplan_6N_head": "6N + head compute",
          "kaplan_6N_context": "6N + context compute",
          "full_model": "full-model compute", "measured": "measured compute"}


def panel_conventions(result: Mapping) -> list[tuple[str, str]]:
    """(convention, panel title) for the side-by-side panels: 6N and measured (or full_model)."""
    convs = list(result.get("conventions", []))
    out = []
    if "kaplan_6N" in convs:
        out.append(("kaplan_6N", LABELS["kaplan_6N"]))
    if "measured" in convs:
        out.append(("measured", LABELS["measured"]))
    elif "full_model" in convs:
        out.append(("full_model", LABELS["full_model"] + " (no measured compute)"))
    if not out and convs:
        out.append((convs[0], LABELS.get(convs[0], convs[0])))
    return out


def _figure(n_panels: int, title: str) -> tuple[Figure, list]:
    fig = Figure(figsize=(6.0 * max(1, n_panels), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(rect=(0, 0.025, 1, 0.975))  # room for the provenance footer
    axes = fig.subplots(1, max(1, n_panels), squeeze=False)[0].tolist()
    fig.suptitle(title)
    return fig, axes


def _footer(fig: Figure) -> None:
    p = provenance()
    fig.text(0.995, 0.002, f"sixn {p['git_commit'][:12]}  {p['date']}", ha="right", va="bottom",
             fontsize=6, color="0.5")


def _tidy_log_ticks(fig: Figure) -> None:
    """Log axes that span one to two decades get labels at 2 and 5 times the powers of ten only
    (matplotlib's own choice labels every minor tick there, and "3x10^10 4x10^10" run into each
    other); wider ones keep only the decades labelled, narrower ones matplotlib's choice. Axes
    given formatters of their own are left as they are."""
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            if axis.get_scale() != "log" or not isinstance(axis.get_minor_formatter(),
                                                           LogFormatterSciNotation):
                continue
            lo, hi = sorted((lo, hi))
            if not (lo > 0 and np.isfinite(hi)):
                continue
            span = np.log10(hi / lo)
            if span <= 1.0:
                continue
            if span <= 2.2:
                axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False,
                                                                 minor_thresholds=(10, 10)))
            else:
                axis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG atomically (temporary file in the same folder, then rename)."""
    _tidy_log_ticks(fig)
    _footer(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    return path


def _fit(result: Mapping, name: str, conv: str | None = None) -> Fit | None:
    slot = result.get("independent", {}) if conv is None else result.get("by_convention", {}).get(conv, {})
    f = slot.get(name)
    return f if isinstance(f, Fit) else None


def _skip_note(ax, result: Mapping, name: str, conv: str | None) -> None:
    slot = result.get("independent", {}) if conv is None else result.get("by_convention", {}).get(conv, {})
    f = slot.get(name)
    if isinstance(f, dict) and f.get("skipped"):
        ax.text(0.02, 0.02, f"{name} not fitted: {f['reason']}", transform=ax.transAxes,
                fontsize=7, color="0.4", wrap=True)


def _draw_law(ax, fit: Fit, x: np.ndarray, xs: np.ndarray, inputs: dict, color: str,
              label: str | None = None, ls: str = "--") -> None:
    """The fitted law at `inputs` (drawn against xs) with its bootstrap band."""
    y = fit.predict(**inputs)
    lo, hi = fit.band(**inputs)
    ax.plot(xs, y, ls, color=color, lw=1.6, label=label or fit.legend())
    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)


def _colors(values: np.ndarray):
    from matplotlib import colormaps
    v = np.log(np.asarray(values, float))
    span = (v.max() - v.min()) or 1.0
    cmap = colormaps["viridis"]
    return [cmap(0.9 * (x - v.min()) / span) for x in v]


def _log_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.25)


# --------------------------------------------------------------------------------------------
# Figures that depend on the compute convention: two panels
# --------------------------------------------------------------------------------------------

def plot_learning_curves(curves: Mapping, result: Mapping, path: Path) -> Path | None:
    """Loss against compute (PF-days) for every ladder run, the C_min envelope and L(C_min)."""
    panels = panel_conventions(result)
    if not panels:
        return None
    bfit = _fit(result, "B_crit")
    fig, axes = _figure(len(panels), "Learning curves against compute, with the C_min envelope")
    run, kind = run_names(curves), kinds(curves)
    N = np.asarray(curves["N"], float)
    L = np.asarray(curves["val_loss"], float)
    names = [r for r in dict.fromkeys(run[kind == "ladder"])] or list(dict.fromkeys(run))
    colors = dict(zip(names, _colors([np.nanmax(N[run == r]) for r in names])))
    for ax, (conv, title) in zip(axes, panels):
        C = np.asarray(curves[CONVENTION_COLUMNS[conv]], float)
        if bfit is not None and "batch_tokens" in curves:
            with np.errstate(all="ignore"):
                C = c_min(C, np.asarray(curves["batch_tokens"], float), bfit.predict(L=L))
        for r in names:
            m = (run == r) & np.isfinite(C) & (C > 0) & np.isfinite(L) & (L > 0)
            if m.any():
                o = np.argsort(C[m])
                ax.plot(C[m][o] / PF_DAY, L[m][o], color=colors[r], lw=0.9, alpha=0.8)
        env = result.get("by_convention", {}).get(conv, {}).get("envelope")
        if isinstance(env, Envelope):
            u = env.usable
            ax.plot(env.C[u] / PF_DAY, env.loss[u], color="k", lw=2.2, label="lower envelope")
            fit = _fit(result, "L_Cmin", conv)
            if fit is not None:
                xs = np.geomspace(env.C[u].min(), env.C[u].max(), 100)
                _draw_law(ax, fit, xs, xs / PF_DAY, {"C_min": xs}, "tab:red",
                          label=f"{fit.form}\nalpha_C={fmt_value(fit.params['alpha_C'])}, "
                                f"C_c={fmt_value(fit.params['C_c_pf_days'])} PF-days")
        _skip_note(ax, result, "L_Cmin", conv)
        xl = "C_min (PF-days, eq. 5.5)" if bfit is not None else "C (PF-days)"
        _log_axes(ax, xl, "validation loss")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_loss_vs_N(summary: Mapping, result: Mapping, path: Path) -> Path | None:
    """Final loss of the ladder runs against N as each convention counts it, with L(N)."""
    panels = panel_conventions(result)
    if not panels:
        return None
    n = nrows(summary)
    loss = final_loss(summary)
    sel = select(summary, ("ladder",))
    D = col(summary, "D", n)
    if not (sel & np.isfinite(loss)).any():
        return None
    fig, axes = _figure(len(panels), "Loss against model size")
    for ax, (conv, title) in zip(axes, panels):
        with np.errstate(all="ignore"):
            Neff = params_from_compute(col(summary, CONVENTION_COLUMNS[conv], n), D)
        m = sel & finite_pos(Neff, loss)
        ax.plot(Neff[m], loss[m], "o", color="tab:blue", label="ladder runs (best val loss)")
        fit = _fit(result, "L_N", conv)
        if fit is not None and m.any():
            xs = np.geomspace(Neff[m].min() / 2, Neff[m].max() * 2, 100)
            _draw_law(ax, fit, xs, xs, {"N": xs}, "tab:red")
        _skip_note(ax, result, "L_N", conv)
        _log_axes(ax, f"N = C / 6D ({'non-embedding' if conv == 'kaplan_6N' else conv})",
                  "loss")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_loss_vs_D(summary: Mapping, result: Mapping, path: Path) -> Path | None:
    """Data-limited runs: loss against tokens, the fitted L(N, D) at their N, and L(D)."""
    panels = panel_conventions(result)
    n = nrows(summary)
    kind = kinds(summary)
    loss = final_loss(summary)
    D = col(summary, "D", n)            # tokens seen, for N = C / 6D
    Dd = dataset_size(summary)           # dataset size, the x axis
    m0 = (kind == "data") & finite_pos(D, Dd, loss)
    if not panels or not m0.any():
        return None
    fig, axes = _figure(len(panels), "Loss against dataset size (data-limited runs)")
    ld = _fit(result, "L_D")
    for ax, (conv, title) in zip(axes, panels):
        with np.errstate(all="ignore"):
            Neff = params_from_compute(col(summary, CONVENTION_COLUMNS[conv], n), D)
        m = m0 & finite_pos(Neff)
        # one group per model (its non-embedding N); N_eff may differ in the last digits
        key = col(summary, "N", n) if "N" in summary else np.round(np.log(Neff), 6)
        groups = np.unique(key[m])
        sizes = np.array([np.median(Neff[m & (key == g)]) for g in groups])
        cols = _colors(sizes) if sizes.size else []
        xs = np.geomspace(Dd[m].min() / 2, Dd[m].max() * 2, 100) if m.any() else None
        fit = _fit(result, "L_ND", conv)
        for g, s, c in zip(groups, sizes, cols):
            k = m & (key == g)
            ax.plot(Dd[k], loss[k], "o", color=c, label=f"runs at N = {fmt_value(s)}")
            if fit is not None:
                _draw_law(ax, fit, xs, xs, {"N": np.full_like(xs, s), "D": xs}, c,
                          label=fit.legend() if s == sizes[-1] else "_")
        if ld is not None and xs is not None:
            ax.plot(xs, ld.predict(D=xs), ":", color="k", label=ld.legend())
        _skip_note(ax, result, "L_ND", conv)
        _log_axes(ax, "D, dataset size (tokens)", "best validation loss")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_nopt_vs_C(result: Mapping, path: Path) -> Path | None:
    """Compute-optimal N along the envelope against compute, with N_opt = k C^a and, when
    fitted, Chinchilla's N_opt = G (C / 6)^a."""
    panels = panel_conventions(result)
    envs = [result.get("by_convention", {}).get(c, {}).get("envelope") for c, _ in panels]
    if not panels or not any(isinstance(e, Envelope) for e in envs):
        return None
    fig, axes = _figure(len(panels), "Compute-optimal model size")
    for ax, (conv, title), env in zip(axes, panels, envs):
        if not isinstance(env, Envelope):
            _skip_note(ax, result, "envelope", conv)
            continue
        u = env.usable
        ax.plot(env.C[u] / PF_DAY, env.N_eff[u], ".", color="0.5", label="lowest run on the envelope")
        i = env.interior
        ax.plot(env.C[i] / PF_DAY, env.N_eff[i], "o", color="tab:blue", ms=4,
                label="points fitted (not the ladder's ends)")
        xs = np.geomspace(env.C[u].min(), env.C[u].max(), 100)
        fit = _fit(result, "N_opt", conv)
        if fit is not None:
            _draw_law(ax, fit, xs, xs / PF_DAY, {"C": xs}, "tab:red",
                      label=f"{fit.form}, a={fmt_value(fit.params['a'])}, "
                            f"k={fmt_value(fit.params['k_pf_days'])} (C in PF-days)")
        chin = _fit(result, "chinchilla", conv)
        if chin is not None and not env.cmin_adjusted:  # G (C/6)^a is on C, not on C_min
            ax.plot(xs / PF_DAY, chinchilla_N_opt(chin, xs), "-.", color="tab:green",
                    label=f"Chinchilla G (C/6)^a, a={fmt_value(chin.params['a'])}")
        _skip_note(ax, result, "N_opt", conv)
        xl = "C_min (PF-days, eq. 5.5)" if env.cmin_adjusted else "C (PF-days)"
        _log_axes(ax, xl, "N_opt = C / 6D of the lowest run")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# IsoFLOP profiles (approach 2)
# --------------------------------------------------------------------------------------------

def _draw_profiles(ax, r: ComputeOptimal) -> None:
    """Loss against N per budget, the parabola of each and its vertex (with its interval)."""
    cols = _colors([p.C for p in r.profiles]) if r.profiles else []
    for p, c in zip(r.profiles, cols):
        if not p.N.size:
            continue
        ax.plot(p.N, p.loss, "o" if p.ok else "x", color=c, ms=4,
                label=f"C = {fmt_value(p.C)}" + ("" if p.ok else f" (left out: {p.status})"))
        if p.coef is not None:
            lo, hi = p.fit_range
            xs = np.geomspace(p.N[lo], p.N[hi - 1], 60)
            ax.plot(xs, p.fitted(xs), "-" if p.ok else ":", color=c, lw=1)
        if p.ok:
            lo, hi = p.N_opt_interval
            err = None if not np.isfinite(lo) else [[p.N_opt - lo], [hi - p.N_opt]]
            ax.errorbar([p.N_opt], [p.loss_opt], xerr=err, fmt="*", color=c, ms=11,
                        mec="k", mew=0.6, capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("N (C / 6D under this convention)" if r.convention not in ("6N", "table")
                  else "N")
    ax.set_ylabel("final loss")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=6)


def _draw_nopt(ax, r: ComputeOptimal) -> None:
    """N_opt per budget (with its interval) against C, the fit N_opt = k C^a and its band."""
    ok = [p for p in r.profiles if p.ok]
    if ok:
        C = np.array([p.C for p in ok])
        N = np.array([p.N_opt for p in ok])
        lo = np.array([p.N_opt_interval[0] for p in ok])
        hi = np.array([p.N_opt_interval[1] for p in ok])
        err = np.where(np.isfinite([lo, hi]), [N - lo, hi - N], 0.0)
        ax.errorbar(C, N, yerr=err, fmt="o", color="tab:blue", capsize=3,
                    label="N_opt per budget (parabola vertex)")
    if r.N_opt is not None:
        f = r.N_opt
        xs = np.geomspace(min(p.C for p in ok) / 1.5, max(p.C for p in ok) * 1.5, 100)
        lo_a, hi_a = f.intervals["a"]
        _draw_law(ax, f, xs, xs, {"C": xs}, "tab:red",
                  label=f"N_opt = k C^a, a = {fmt_value(f.params['a'])} "
                        f"[{fmt_value(lo_a)}, {fmt_value(hi_a)}]")
    else:
        ax.text(0.02, 0.02, f"N_opt(C) not fitted: {r.reason}", transform=ax.transAxes,
                fontsize=7, color="0.4", wrap=True)
    _log_axes(ax, "C (FLOPs)", "N_opt")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_isoflop(results: list[tuple[ComputeOptimal, str]], path: Path,
                 title: str = "IsoFLOP profiles and the compute-optimal model size") -> Path | None:
    """One column per (approach-2 result, panel title): the profiles above, N_opt(C) below."""
    results = [(r, t) for r, t in results if r is not None and r.profiles]
    if not results:
        return None
    fig = Figure(figsize=(6.0 * len(results), 9.0), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(rect=(0, 0.02, 1, 0.98))
    axes = fig.subplots(2, len(results), squeeze=False)
    fig.suptitle(title)
    for j, (r, t) in enumerate(results):
        _draw_profiles(axes[0][j], r)
        axes[0][j].set_title(t + (" (profiles rebuilt from the budgets' runs)" if r.rebuilt
                                  else ""), fontsize=9)
        _draw_nopt(axes[1][j], r)
    return _save(fig, path)


def isoflop_panels(result: Mapping) -> list[tuple[ComputeOptimal, str]]:
    """The approach-2 results of a sweep to draw: 6N and measured (or full-model), and every
    budget convention of the sweep."""
    by = result.get("by_convention", {})
    designs = list(result.get("compute_optimal", {}).get("designs", {}))
    want = [c for c, _ in panel_conventions(result)] + designs
    out = []
    for conv in dict.fromkeys(want):
        r = by.get(conv, {}).get("approach2")
        r = r if isinstance(r, ComputeOptimal) else by.get(conv, {}).get("approach2_profiles")
        if isinstance(r, ComputeOptimal):
            out.append((r, LABELS.get(conv, conv)))
    return out


# --------------------------------------------------------------------------------------------
# Experiments (one panel; they do not depend on the compute convention)
# --------------------------------------------------------------------------------------------

def plot_shape(summary: Mapping, path: Path) -> Path | None:
    """Kaplan Fig. 5: loss increase over the best shape of the same N, against d_model / n_layer."""
    kind = kinds(summary)
    n = nrows(summary)
    loss = final_loss(summary)
    N = col(summary, "N", n)
    dm, nl = col(summary, "d_model", n), col(summary, "n_layer", n)
    m = (kind == "shape") & finite_pos(loss, N, dm, nl)
    if m.sum() < 2:
        return None
    fig, (ax,) = _figure(1, "Loss against shape at fixed size")
    groups = np.unique(np.round(np.log10(N[m]), 1))
    for g, c in zip(groups, _colors(10 ** groups)):
        k = m & (np.round(np.log10(np.where(N > 0, N, 1)), 1) == g)
        rel = 100 * (loss[k] / loss[k].min() - 1)
        ar = dm[k] / nl[k]
        o = np.argsort(ar)
        ax.plot(ar[o], rel[o], "o-", color=c, label=f"N ~ {fmt_value(10 ** g)}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("aspect ratio d_model / n_layer")
    ax.set_ylabel("loss increase over the best shape (%)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sample_efficiency(curves: Mapping, path: Path) -> Path | None:
    """Kaplan Fig. 2 (left): loss against tokens processed, each model size of the ladder."""
    run, kind = run_names(curves), kinds(curves)
    tok = col(curves, "tokens", nrows(curves))
    L = col(curves, "val_loss", nrows(curves))
    N = col(curves, "N", nrows(curves))
    names = [r for r in dict.fromkeys(run[kind == "ladder"])]
    if not names:
        return None
    fig, (ax,) = _figure(1, "Sample efficiency: larger models reach a loss in fewer tokens")
    sizes = [np.nanmax(N[run == r]) for r in names]
    for r, s, c in zip(names, sizes, _colors(sizes)):
        m = (run == r) & finite_pos(tok, L)
        o = np.argsort(tok[m])
        ax.plot(tok[m][o], L[m][o], color=c, label=f"N = {fmt_value(s)}")
    _log_axes(ax, "tokens processed", "validation loss")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_transfer(curves: Mapping, path: Path) -> Path | None:
    """Kaplan Fig. 8: loss on another distribution against the validation loss."""
    n = nrows(curves)
    L, T = col(curves, "val_loss", n), col(curves, "transfer_loss", n)
    m = finite_pos(L, T)
    if m.sum() < 2:
        return None
    run, N = run_names(curves), col(curves, "N", n)
    fig, (ax,) = _figure(1, "Transfer: loss on another distribution against validation loss")
    names = [r for r in dict.fromkeys(run[m])]
    sizes = [np.nanmax(N[run == r]) for r in names]
    for r, s, c in zip(names, sizes, _colors(sizes)):
        k = m & (run == r)
        ax.plot(L[k], T[k], ".", color=c, ms=3)
    off = float(np.median(T[m] - L[m]))
    xs = np.linspace(L[m].min(), L[m].max(), 50)
    ax.plot(xs, xs + off, "--", color="k", label=f"transfer = val + {off:.3g} (median offset)")
    ax.set_xlabel("validation loss")
    ax.set_ylabel("transfer loss")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep(sweep_dir: str | Path, result: Mapping | None = None, processes: int = 1,
               **fit_options) -> list[Path]:
    """Every figure the sweep supports, as PNGs next to its tables. `result` is fit_sweep's
    return value; without one the fits are computed with `fit_options` (and not written).
    processes > 1 draws the figures in that many processes at once (forked, on Linux)."""
    t = load_sweep_tables(sweep_dir)
    if result is None:
        result = fit_sweep(t.sweep, write=False, **fit_options)
    sweep, curves, summary = t.sweep, t.curves, t.summary
    jobs: list[Callable[[], Path | None]] = []
    if curves is not None:
        jobs.append(lambda: plot_learning_curves(curves, result, sweep / "fig_learning_curves.png"))
    jobs += [lambda: plot_loss_vs_N(summary, result, sweep / "fig_loss_vs_N.png"),
             lambda: plot_loss_vs_D(summary, result, sweep / "fig_loss_vs_D.png"),
             lambda: plot_nopt_vs_C(result, sweep / "fig_nopt_vs_C.png"),
             lambda: plot_isoflop(isoflop_panels(result), sweep / "fig_isoflop.png"),
             lambda: plot_shape(summary, sweep / "fig_shape.png")]
    if curves is not None:
        jobs += [lambda: plot_sample_efficiency(curves, sweep / "fig_sample_efficiency.png"),
                 lambda: plot_transfer(curves, sweep / "fig_transfer.png")]
    return [p for p in _run_jobs(jobs, processes) if p is not None]


_JOBS: list[Callable] = []   # what the forked drawing processes run (inherited, not pickled)


def _run_job(i: int):
    return _JOBS[i]()


def _run_jobs(jobs: list[Callable], processes: int) -> list:
    """jobs() in order, in this process or spread over `processes` forked ones on Linux (each
    figure is independent: matplotlib's Agg canvases share nothing, and no torch runs in them).
    An exception in a job is raised here."""
    if processes <= 1 or len(jobs) <= 1 or not sys.platform.startswith("linux"):
        return [job() for job in jobs]
    global _JOBS
    _JOBS = jobs
    try:
        with warnings.catch_warnings():   # Python >= 3.12 warns of torch's idle OpenMP threads
            warnings.simplefilter("ignore", DeprecationWarning)
            with multiprocessing.get_context("fork").Pool(min(processes, len(jobs))) as pool:
                return pool.map(_run_job, range(len(jobs)), chunksize=1)
    finally:
        _JOBS = []
