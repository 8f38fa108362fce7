"""Scaling-law fits: Kaplan's laws, the C_min envelope, B_crit, N_opt(C) and Chinchilla approach 3.

Laws (Kaplan et al. 2020 unless noted; see shared/reference/kaplan.md):

    L_N         L = (N_c / N)^alpha_N                              eq. 1.1
    L_N_E       L = E + (N_c / N)^alpha_N                          with an irreducible loss
    L_D         L = (D_c / D)^alpha_D                              eq. 1.2
    L_ND        L = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D   eq. 1.5
    L_NS        L = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S      eq. 1.6, S_min by eq. 5.4
    L_Cmin      L = (C_c / C_min)^alpha_C                          eq. 1.3, C_min by eq. 5.5
    B_crit      B_crit = B_star / L^(1 / alpha_B)                  eq. 1.4 (B in tokens)
    N_opt       N_opt = k C^a                                      eq. 1.7 / Fig. 14
    chinchilla  L = E + A / N^alpha + B / D^beta                   Hoffmann et al. 2022, approach 3

How they are fitted:
- Everything is fitted in log space. Pure power laws are straight lines in log-log and are fitted by
  ordinary least squares (closed form, so the bootstrap is vectorised over resamples).
- L_N_E, L_ND and L_NS are least squares on log residuals of their logsumexp form
  (scipy.optimize.least_squares, trust region) from a small grid of starts, keeping the best.
- chinchilla follows Hoffmann et al. / Besiroglu et al.: minimise sum_i Huber_delta(LSE(e, a -
  alpha log N_i, b - beta log D_i) - log L_i), delta = 1e-3, with L-BFGS-B (analytic gradient,
  tolerances tight enough that the optimiser does not stop early: Besiroglu's lesson) from a grid
  of starts. The objective is evaluated on the whole grid first (vectorised) and L-BFGS-B runs from
  the `n_polish` best grid points (all of them with n_polish=None); the best end point by the same
  objective wins. E = exp(e), A = exp(a), B = exp(b); derived a_opt = beta / (alpha + beta),
  b_opt = alpha / (alpha + beta), G = (alpha A / (beta B))^(1 / (alpha + beta)), and
  N_opt = G (C / 6)^a_opt.
- Intervals: percentile bootstrap (2.5 %, 97.5 %). Points are resampled with replacement, seeded;
  each resample is refitted from the point estimate (one start). Points from the same learning
  curve are treated as independent, so intervals of curve-based fits are optimistic.

Compute conventions (fit_sweep): each compute count of the sweep (kaplan_6N, kaplan_6N_context,
full_model and measured when present) is fitted side by side. Where a law needs a parameter count,
it uses the count that convention implies, N_eff = C / (6 D) (model.flops.params_from_compute), so
C = 6 N_eff D holds in every convention and kaplan_6N gives back Kaplan's non-embedding N. Laws in D,
S and B alone do not depend on the counting and are fitted once ("independent").
"""

from __future__ import annotations

import csv
import ctypes
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import optimize

from sixn.model.flops import PF_DAY, KAPLAN_FLOPS_PER_PARAM_TOKEN, params_from_compute

HUBER_DELTA = 1e-3
DEFAULT_BOOTSTRAP = 100
CI_PERCENTILES = (2.5, 97.5)

# Compute columns of the sweep tables, by convention (curves.csv: cumulative; summary.csv: totals).
CONVENTION_COLUMNS: dict[str, str] = {
    "kaplan_6N": "C_kaplan_6N",
    "kaplan_6N_context": "C_kaplan_6N_context",
    "full_model": "C_full_model",
    "measured": "C_measured",
}

# Published constants, for the ours-vs-theirs table (shared/reference/kaplan.md).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "kaplan": {
        "L_N": {"alpha_N": 0.076, "N_c": 8.8e13},
        "L_D": {"alpha_D": 0.095, "D_c": 5.4e13},
        "L_ND": {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13},
        "L_NS": {"alpha_N": 0.077, "alpha_S": 0.76, "N_c": 6.5e13, "S_c": 2.1e3},
        "L_Cmin": {"alpha_C": 0.050, "C_c_pf_days": 3.1e8},
        "B_crit": {"alpha_B": 0.21, "B_star": 2e8},
        "N_opt": {"a": 0.73, "k_pf_days": 1.3e9},
    },
    "chinchilla": {
        "chinchilla": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28,
                       "a": 0.28 / (0.34 + 0.28)},
    },
    "besiroglu": {
        "chinchilla": {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366,
                       "a": 0.513},
    },
}


# --------------------------------------------------------------------------------------------
# Laws
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Law:
    name: str
    form: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]          # the parameters the prediction needs
    fn: Callable[..., np.ndarray]    # fn(params: mapping, **inputs) -> y; broadcasts


def _chinchilla(p, N, D):
    return p["E"] + p["A"] / N ** p["alpha"] + p["B"] / D ** p["beta"]


LAWS: dict[str, Law] = {law.name: law for law in (
    Law("L_N", "L = (N_c/N)^alpha_N", ("N",), ("alpha_N", "N_c"),
        lambda p, N: (p["N_c"] / N) ** p["alpha_N"]),
    Law("L_N_E", "L = E + (N_c/N)^alpha_N", ("N",), ("E", "alpha_N", "N_c"),
        lambda p, N: p["E"] + (p["N_c"] / N) ** p["alpha_N"]),
    Law("L_D", "L = (D_c/D)^alpha_D", ("D",), ("alpha_D", "D_c"),
        lambda p, D: (p["D_c"] / D) ** p["alpha_D"]),
    Law("L_ND", "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D", ("N", "D"),
        ("alpha_N", "alpha_D", "N_c", "D_c"),
        lambda p, N, D: ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D)
        ** p["alpha_D"]),
    Law("L_NS", "L = (N_c/N)^alpha_N + (S_c/S_min)^alpha_S", ("N", "S_min"),
        ("alpha_N", "alpha_S", "N_c", "S_c"),
        lambda p, N, S_min: (p["N_c"] / N) ** p["alpha_N"] + (p["S_c"] / S_min) ** p["alpha_S"]),
    Law("L_Cmin", "L = (C_c/C_min)^alpha_C", ("C_min",), ("alpha_C", "C_c"),
        lambda p, C_min: (p["C_c"] / C_min) ** p["alpha_C"]),
    Law("B_crit", "B_crit = B_star / L^(1/alpha_B)", ("L",), ("alpha_B", "B_star"),
        lambda p, L: p["B_star"] / L ** (1.0 / p["alpha_B"])),
    Law("N_opt", "N_opt = k C^a", ("C",), ("a", "k"),
        lambda p, C: p["k"] * C ** p["a"]),
    Law("chinchilla", "L = E + A/N^alpha + B/D^beta", ("N", "D"),
        ("E", "A", "B", "alpha", "beta"), _chinchilla),
)}


def fmt_value(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "nan"
    return f"{v:.4g}"


@dataclass
class Fit:
    """One fitted law: point estimates, bootstrap intervals and goodness of fit."""
    law: str
    params: dict[str, float]                       # point estimates (derived quantities included)
    intervals: dict[str, tuple[float, float]]      # 2.5 % and 97.5 % bootstrap percentiles
    n: int                                         # points fitted
    r2_log: float                                  # R^2 of the log of the fitted quantity
    convention: str | None = None                  # compute convention, None if independent of it
    n_boot: int = 0                                # bootstrap resamples that converged
    objective: float | None = None                 # final objective (Huber sum, or SSE of logs)
    notes: str = ""
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # bootstrap draws

    @property
    def form(self) -> str:
        return LAWS[self.law].form

    def predict(self, **inputs) -> np.ndarray:
        law = LAWS[self.law]
        return law.fn(self.params, **{k: np.asarray(inputs[k], dtype=float) for k in law.inputs})

    def band(self, q: tuple[float, float] = CI_PERCENTILES, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap band of the prediction at `inputs` (arrays of one shape)."""
        law = LAWS[self.law]
        x = {k: np.asarray(inputs[k], dtype=float)[None, ...] for k in law.inputs}
        if not self.samples:
            y = self.predict(**inputs)
            return y, y
        shape = (-1,) + (1,) * np.ndim(next(iter(x.values()))[0])
        p = {k: np.asarray(self.samples[k]).reshape(shape) for k in law.params}
        with np.errstate(all="ignore"):
            ys = law.fn(p, **x)
        ok = np.all(np.isfinite(ys.reshape(len(ys), -1)), axis=1)
        if not ok.any():
            y = self.predict(**inputs)
            return y, y
        lo, hi = np.percentile(ys[ok], q, axis=0)
        return lo, hi

    def describe(self, names: Sequence[str] | None = None) -> str:
        names = list(names or self.params)
        parts = []
        for k in names:
            lo, hi = self.intervals.get(k, (math.nan, math.nan))
            parts.append(f"{k} = {fmt_value(self.params[k])} [{fmt_value(lo)}, {fmt_value(hi)}]")
        return f"{self.form}: " + ", ".join(parts)

    def legend(self, names: Sequence[str] | None = None) -> str:
        names = list(names or LAWS[self.law].params)
        return f"{self.form}\n" + ", ".join(f"{k}={fmt_value(self.params[k])}" for k in names)

    def to_dict(self) -> dict:
        def clean(v):
            return None if v is None or not np.isfinite(v) else float(v)
        return {
            "law": self.law, "form": self.form, "convention": self.convention,
            "params": {k: clean(v) for k, v in self.params.items()},
            "intervals": {k: [clean(lo), clean(hi)] for k, (lo, hi) in self.intervals.items()},
            "n": self.n, "r2_log": clean(self.r2_log), "n_boot": self.n_boot,
            "objective": clean(self.objective) if self.objective is not None else None,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Input checks and shared machinery
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _openblas_thread_setters() -> tuple:
    """(get, set) pairs of every OpenBLAS loaded in this process (numpy's and scipy's)."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return ()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for stem in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                get, set_ = (getattr(lib, f"{stem}{w}_num_threads{suffix}", None)
                             for w in ("get", "set"))
                if get is not None and set_ is not None:
                    out.append((get, set_))
                    break
            else:
                continue
            break
    return tuple(out)


@contextmanager
def single_thread_blas():
    """Run BLAS single-threaded inside the block. L-BFGS-B and least_squares make many tiny BLAS
    calls; on a busy machine OpenBLAS's threads make each one 10-20x slower. Uses threadpoolctl
    when it is installed, else OpenBLAS's own thread setters; a no-op where neither works."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    setters = _openblas_thread_setters()
    old = [get() for get, _ in setters]
    for _, set_ in setters:
        set_(1)
    try:
        yield
    finally:
        for (_, set_), n in zip(setters, old):
            set_(n)


def _positive(name: str, x, fit: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{fit}: {name} must be finite and > 0; bad values at index {shown} "
                         f"(e.g. {a[bad[0]]!r})")
    return a


def _inputs(fit: str, min_points: int, distinct: Mapping[str, int] | None = None,
            **arrays) -> dict[str, np.ndarray]:
    out = {k: _positive(k, v, fit) for k, v in arrays.items()}
    sizes = {k: v.size for k, v in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{fit}: inputs differ in length: {sizes}")
    n = next(iter(sizes.values()))
    if n < min_points:
        raise ValueError(f"{fit} needs at least {min_points} points, got {n}")
    for k, m in (distinct or {}).items():
        u = np.unique(out[k]).size
        if u < m:
            raise ValueError(f"{fit} needs at least {m} distinct values of {k}, got {u}")
    return out


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _r2(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - yhat) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def _intervals(samples: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    out = {}
    for k, v in samples.items():
        v = np.asarray(v, dtype=float)
        v = v[np.isfinite(v)]
        out[k] = tuple(float(q) for q in np.percentile(v, CI_PERCENTILES)) if v.size else (
            math.nan, math.nan)
    return out


def _make_fit(law: str, theta: np.ndarray, boot: np.ndarray, to_params, y_log: np.ndarray,
              y_log_hat: np.ndarray, convention: str | None, objective: float | None,
              notes: str = "") -> Fit:
    params = {k: float(v) for k, v in to_params(np.asarray(theta, dtype=float)).items()}
    ok = np.all(np.isfinite(boot), axis=1) if boot.size else np.zeros(0, bool)
    with np.errstate(all="ignore"):
        samples = {k: np.asarray(v, dtype=float) for k, v in to_params(boot[ok]).items()} \
            if ok.any() else {}
    return Fit(law, params, _intervals(samples) if samples else
               {k: (math.nan, math.nan) for k in params},
               int(y_log.size), _r2(y_log, y_log_hat), convention, int(ok.sum()), objective,
               notes, samples)


def _ols_rows(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept of y = c + s x for every row of X, Y (vectorised over resamples)."""
    xm = X.mean(axis=-1, keepdims=True)
    ym = Y.mean(axis=-1, keepdims=True)
    sxx = np.sum((X - xm) ** 2, axis=-1)
    sxy = np.sum((X - xm) * (Y - ym), axis=-1)
    with np.errstate(all="ignore"):
        s = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), np.nan)
    return s, ym[..., 0] - s * xm[..., 0]


def _loglinear_fit(law: str, x: np.ndarray, y: np.ndarray, to_params, n_boot: int, seed: int,
                   convention: str | None, notes: str = "") -> Fit:
    """log y = c + s log x by least squares; to_params maps theta[..., (c, s)] to the law's."""
    lx, ly = np.log(x), np.log(y)
    s, c = _ols_rows(lx[None], ly[None])
    theta = np.array([c[0], s[0]])
    idx = _resamples(lx.size, n_boot, seed)
    bs, bc = _ols_rows(lx[idx], ly[idx]) if n_boot else (np.zeros(0), np.zeros(0))
    boot = np.stack([bc, bs], axis=-1) if n_boot else np.zeros((0, 2))
    yhat = theta[0] + theta[1] * lx
    return _make_fit(law, theta, boot, to_params, ly, yhat, convention,
                     float(np.sum((ly - yhat) ** 2)), notes)


@single_thread_blas()
def _nls_fit(law: str, resid, data: tuple[np.ndarray, ...], y_log: np.ndarray, starts: np.ndarray,
             lower: Sequence[float], upper: Sequence[float], to_params, n_boot: int, seed: int,
             convention: str | None, notes: str = "", n_keep: int = 8) -> Fit:
    """Least squares of log residuals resid(theta, *data) from the n_keep best of `starts`."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    starts = np.clip(np.atleast_2d(starts), lo, hi)
    with np.errstate(all="ignore"):
        cost0 = np.array([np.sum(resid(s, *data) ** 2) for s in starts])
    cost0 = np.where(np.isfinite(cost0), cost0, np.inf)
    best = None
    for s in starts[np.argsort(cost0, kind="stable")[:n_keep]]:
        try:
            r = optimize.least_squares(resid, s, args=data, bounds=(lo, hi), method="trf",
                                       x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12,
                                       max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
    if best is None:
        raise ValueError(f"{law}: no start converged")
    theta = best.x
    idx = _resamples(y_log.size, n_boot, seed)
    boot = np.full((n_boot, theta.size), np.nan)
    for b in range(n_boot):
        d = tuple(a[idx[b]] for a in data)
        try:
            r = optimize.least_squares(resid, theta, args=d, bounds=(lo, hi), method="trf",
                                       x_scale="jac", xtol=1e-10, ftol=1e-10, gtol=1e-10,
                                       max_nfev=500)
            if np.isfinite(r.cost):
                boot[b] = r.x
        except (ValueError, FloatingPointError):
            pass
    r_hat = resid(theta, *data)
    return _make_fit(law, theta, boot, to_params, y_log, y_log + r_hat, convention,
                     float(np.sum(r_hat ** 2)), notes)


def _grid(*axes: Sequence[float]) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))


# --------------------------------------------------------------------------------------------
# Kaplan's laws
# --------------------------------------------------------------------------------------------

def _power_params(exp_name: str, scale_name: str):
    """(c, s) of log y = c + s log x for y = (X_c / x)^alpha: alpha = -s, X_c = exp(c / alpha)."""
    def to_params(th):
        alpha = -th[..., 1]
        with np.errstate(all="ignore"):
            return {exp_name: alpha, scale_name: np.exp(th[..., 0] / alpha)}
    return to_params


def fit_L_N(N, L, *, with_E: bool = False, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
            convention: str | None = None) -> Fit:
    """Kaplan's L(N) = (N_c / N)^alpha_N, or with_E: E + (N_c / N)^alpha_N."""
    if not with_E:
        d = _inputs("fit_L_N", 3, {"N": 2}, N=N, L=L)
        return _loglinear_fit("L_N", d["N"], d["L"], _power_params("alpha_N", "N_c"), n_boot,
                              seed, convention)
    d = _inputs("fit_L_N (with E)", 4, {"N": 3}, N=N, L=L)
    lN, lL = np.log(d["N"]), np.log(d["L"])

    def resid(th, lN, lL):  # th = (log E, alpha_N, log N_c)
        return np.logaddexp(th[0], th[1] * (th[2] - lN)) - lL

    lmin = np.log(d["L"].min())
    starts = _grid(lmin + np.log([0.2, 0.5, 0.8, 0.95]), [0.05, 0.1, 0.3, 0.6, 1.0],
                   lN.max() + np.array([1.0, 5.0, 15.0, 30.0]))

    def to_params(th):
        return {"E": np.exp(th[..., 0]), "alpha_N": th[..., 1], "N_c": np.exp(th[..., 2])}
    return _nls_fit("L_N_E", resid, (lN, lL), lL, starts, [-30, 1e-4, -50], [10, 5, 200],
                    to_params, n_boot, seed, convention)


def fit_L_D(D, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
            convention: str | None = None) -> Fit:
    """Kaplan's L(D) = (D_c / D)^alpha_D (data-limited, early-stopped runs)."""
    d = _inputs("fit_L_D", 3, {"D": 2}, D=D, L=L)
    return _loglinear_fit("L_D", d["D"], d["L"], _power_params("alpha_D", "D_c"), n_boot, seed,
                          convention)


def fit_L_ND(N, D, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             convention: str | None = None) -> Fit:
    """Kaplan's eq. 1.5, L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D."""
    d = _inputs("fit_L_ND", 5, {"N": 2, "D": 2}, N=N, D=D, L=L)
    lN, lD, lL = np.log(d["N"]), np.log(d["D"]), np.log(d["L"])

    def resid(th, lN, lD, lL):  # th = (alpha_N, alpha_D, log N_c, log D_c)
        return th[1] * np.logaddexp(th[0] / th[1] * (th[2] - lN), th[3] - lD) - lL

    starts = _grid([0.03, 0.08, 0.2, 0.5], [0.03, 0.1, 0.3, 0.6],
                   lN.max() + np.array([2.0, 10.0, 25.0]), lD.max() + np.array([2.0, 10.0, 25.0]))

    def to_params(th):
        return {"alpha_N": th[..., 0], "alpha_D": th[..., 1], "N_c": np.exp(th[..., 2]),
                "D_c": np.exp(th[..., 3])}
    return _nls_fit("L_ND", resid, (lN, lD, lL), lL, starts, [1e-4, 1e-4, -50, -50],
                    [5, 5, 200, 200], to_params, n_boot, seed, convention)


def s_min(S, B, B_crit):
    """Kaplan eq. 5.4: the fewest steps to the same loss, S_min = S / (1 + B_crit / B)."""
    return np.asarray(S, float) / (1.0 + np.asarray(B_crit, float) / np.asarray(B, float))


def c_min(C, B, B_crit):
    """Kaplan eq. 5.5: the least compute to the same loss, C_min = C / (1 + B / B_crit)."""
    return np.asarray(C, float) / (1.0 + np.asarray(B, float) / np.asarray(B_crit, float))


def fit_L_NS(N, S, B, L, B_crit: Fit, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             convention: str | None = None) -> Fit:
    """Kaplan's eq. 1.6, L(N, S) = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S, with
    S_min = S / (1 + B_crit(L) / B) (eq. 5.4) from a fitted B_crit(L) law; B in tokens."""
    if not isinstance(B_crit, Fit) or B_crit.law != "B_crit":
        raise ValueError("fit_L_NS needs a B_crit fit (fit_B_crit) to compute S_min")
    d = _inputs("fit_L_NS", 5, {"N": 2, "S": 2}, N=N, S=S, B=B, L=L)
    Smin = s_min(d["S"], d["B"], B_crit.predict(L=d["L"]))
    lN, lS, lL = np.log(d["N"]), np.log(Smin), np.log(d["L"])

    def resid(th, lN, lS, lL):  # th = (alpha_N, alpha_S, log N_c, log S_c)
        return np.logaddexp(th[0] * (th[2] - lN), th[1] * (th[3] - lS)) - lL

    starts = _grid([0.03, 0.08, 0.2, 0.5], [0.1, 0.4, 0.8, 1.5],
                   lN.max() + np.array([2.0, 10.0, 25.0]), lS.min() + np.array([-2.0, 0.0, 3.0, 8.0]))

    def to_params(th):
        return {"alpha_N": th[..., 0], "alpha_S": th[..., 1], "N_c": np.exp(th[..., 2]),
                "S_c": np.exp(th[..., 3])}
    return _nls_fit("L_NS", resid, (lN, lS, lL), lL, starts, [1e-4, 1e-4, -50, -50],
                    [5, 10, 200, 200], to_params, n_boot, seed, convention,
                    notes="S_min = S / (1 + B_crit(L) / B), eq. 5.4")


def fit_L_Cmin(C_min, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
               convention: str | None = None, notes: str = "") -> Fit:
    """Kaplan's L(C_min) = (C_c / C_min)^alpha_C; C in FLOPs, C_c also given in PF-days."""
    d = _inputs("fit_L_Cmin", 3, {"C_min": 2}, C_min=C_min, L=L)
    base = _power_params("alpha_C", "C_c")

    def to_params(th):
        p = base(th)
        return {**p, "C_c_pf_days": p["C_c"] / PF_DAY}
    return _loglinear_fit("L_Cmin", d["C_min"], d["L"], to_params, n_boot, seed, convention, notes)


def fit_B_crit(b_simple, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Fit:
    """Kaplan's B_crit(L) = B_star / L^(1 / alpha_B), from gradient-noise-scale estimates
    (b_simple, in tokens) against the loss at which they were measured."""
    d = _inputs("fit_B_crit", 3, {"L": 2}, b_simple=b_simple, L=L)

    def to_params(th):  # log B = log B_star - (1 / alpha_B) log L
        with np.errstate(all="ignore"):
            return {"alpha_B": -1.0 / th[..., 1], "B_star": np.exp(th[..., 0])}
    return _loglinear_fit("B_crit", d["L"], d["b_simple"], to_params, n_boot, seed, None)


def fit_N_opt(C, N_opt, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              convention: str | None = None, notes: str = "") -> Fit:
    """N_opt = k C^a (C in FLOPs); k_pf_days is k for C in PF-days, as Kaplan quotes it."""
    d = _inputs("fit_N_opt", 3, {"C": 2}, C=C, N_opt=N_opt)

    def to_params(th):
        a, k = th[..., 1], np.exp(th[..., 0])
        return {"a": a, "k": k, "k_pf_days": k * PF_DAY ** a}
    return _loglinear_fit("N_opt", d["C"], d["N_opt"], to_params, n_boot, seed, convention, notes)


# --------------------------------------------------------------------------------------------
# Chinchilla approach 3
# --------------------------------------------------------------------------------------------

# Hoffmann et al.'s grid of initialisations: e, a, b (logs of E, A, B), alpha, beta.
HOFFMANN_GRID = (np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 25.1, 5.0), np.arange(0.0, 25.1, 5.0),
                 np.arange(0.0, 2.01, 0.5), np.arange(0.0, 2.01, 0.5))
_CHIN_BOUNDS = [(None, None), (None, None), (None, None), (0.0, 10.0), (0.0, 10.0)]


def huber(r, delta: float = HUBER_DELTA):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _chinchilla_lse(theta: np.ndarray, lN: np.ndarray, lD: np.ndarray):
    """log-sum-exp of (e, a - alpha log N, b - beta log D) and its softmax weights.
    theta (..., 5) -> lse (..., n), weights (3, ..., n)."""
    th = np.asarray(theta, float)[..., None]
    t = np.stack(np.broadcast_arrays(th[..., 0, :], th[..., 1, :] - th[..., 3, :] * lN,
                                     th[..., 2, :] - th[..., 4, :] * lD))
    m = t.max(axis=0)
    w = np.exp(t - m)
    s = w.sum(axis=0)
    return m + np.log(s), w / s


def chinchilla_objective(theta, lN, lD, lL, delta: float = HUBER_DELTA):
    """sum_i Huber_delta(LSE_i - log L_i) for theta (..., 5); vectorised over leading axes."""
    lse, _ = _chinchilla_lse(theta, lN, lD)
    return huber(lse - lL, delta).sum(axis=-1)


def _chinchilla_fg(theta, lN, lD, lL, delta):
    lse, w = _chinchilla_lse(theta, lN, lD)
    r = lse - lL
    g = np.clip(r, -delta, delta)  # Huber'(r)
    grad = np.array([np.sum(g * w[0]), np.sum(g * w[1]), np.sum(g * w[2]),
                     -np.sum(g * w[1] * lN), -np.sum(g * w[2] * lD)])
    return float(huber(r, delta).sum()), grad


def _lbfgsb(theta0, lN, lD, lL, delta):
    return optimize.minimize(_chinchilla_fg, theta0, args=(lN, lD, lL, delta), jac=True,
                             method="L-BFGS-B", bounds=_CHIN_BOUNDS,
                             options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-15,
                                      "gtol": 1e-12, "maxcor": 20})


def _chinchilla_params(th):
    e, a, b, al, be = (th[..., i] for i in range(5))
    with np.errstate(all="ignore"):
        A, B = np.exp(a), np.exp(b)
        s = al + be
        return {"E": np.exp(e), "A": A, "B": B, "alpha": al, "beta": be,
                "a": be / s, "b": al / s, "G": (al * A / (be * B)) ** (1.0 / s)}


@single_thread_blas()
def fit_chinchilla(N, D, L, *, delta: float = HUBER_DELTA, grid: Sequence[Sequence[float]] = HOFFMANN_GRID,
                   n_polish: int | None = 64, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                   convention: str | None = None) -> Fit:
    """Chinchilla approach 3: L = E + A / N^alpha + B / D^beta by Huber (delta) on log residuals,
    L-BFGS-B from the n_polish best points of `grid` (None: every grid point). Derived:
    a = beta / (alpha + beta), b = alpha / (alpha + beta), G with N_opt = G (C / 6)^a."""
    d = _inputs("fit_chinchilla", 6, {"N": 2, "D": 2}, N=N, D=D, L=L)
    if not delta > 0:
        raise ValueError(f"fit_chinchilla: delta must be > 0, got {delta}")
    lN, lD, lL = np.log(d["N"]), np.log(d["D"]), np.log(d["L"])
    starts = _grid(*grid)
    f0 = np.concatenate([chinchilla_objective(chunk, lN, lD, lL, delta)
                         for chunk in np.array_split(starts, max(1, starts.shape[0] // 256))])
    order = np.argsort(np.where(np.isfinite(f0), f0, np.inf), kind="stable")
    if n_polish is not None:
        order = order[:n_polish]
    best = None
    for i in order:
        r = _lbfgsb(starts[i], lN, lD, lL, delta)
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    theta = best.x
    idx = _resamples(lL.size, n_boot, seed)
    boot = np.full((n_boot, 5), np.nan)
    for b in range(n_boot):
        j = idx[b]
        r = _lbfgsb(theta, lN[j], lD[j], lL[j], delta)
        if np.isfinite(r.fun):
            boot[b] = r.x
    lse, _ = _chinchilla_lse(theta, lN, lD)
    notes = (f"Huber delta {delta:g} on log residuals; L-BFGS-B from {order.size} of "
             f"{starts.shape[0]} grid starts; N_opt = G (C/{KAPLAN_FLOPS_PER_PARAM_TOKEN})^a")
    return _make_fit("chinchilla", theta, boot, _chinchilla_params, lL, lse, convention,
                     float(best.fun), notes)


def chinchilla_N_opt(fit: Fit, C) -> np.ndarray:
    """Compute-optimal N of a Chinchilla fit, N_opt = G (C / 6)^a (C in FLOPs, C = 6 N D)."""
    p = fit.params
    return p["G"] * (np.asarray(C, float) / KAPLAN_FLOPS_PER_PARAM_TOKEN) ** p["a"]


# --------------------------------------------------------------------------------------------
# Tables and the C_min envelope
# --------------------------------------------------------------------------------------------

def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV as columns: float arrays where every non-empty cell parses (empty -> NaN), else str."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    out: dict[str, np.ndarray] = {}
    for k in fields:
        vals = [(r.get(k) or "").strip() for r in rows]
        try:
            out[k] = np.array([float(v) if v else math.nan for v in vals], dtype=float)
        except ValueError:
            out[k] = np.array(vals, dtype=object)
    return out


def _col(t: Mapping[str, np.ndarray], name: str, n: int, default=math.nan) -> np.ndarray:
    return np.asarray(t[name]) if name in t else np.full(n, default)


def _nrows(t: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(t.values()))) if t else 0


def present_conventions(table: Mapping[str, np.ndarray]) -> list[str]:
    """Conventions whose compute column exists and holds at least one positive number."""
    out = []
    for conv, col in CONVENTION_COLUMNS.items():
        if col in table and table[col].dtype.kind == "f" and np.any(np.isfinite(table[col])
                                                                     & (table[col] > 0)):
            out.append(conv)
    return out


@dataclass
class Envelope:
    """Lower envelope of loss against compute over the runs of a sweep (one convention)."""
    convention: str
    C: np.ndarray          # compute grid (C_min by eq. 5.5 when cmin_adjusted)
    loss: np.ndarray       # lowest loss over runs at each C (NaN where no run reaches it)
    run: np.ndarray        # the run that is lowest there
    N: np.ndarray          # its non-embedding N
    N_eff: np.ndarray      # its N as this convention counts it, C / (6 D)
    coverage: np.ndarray   # how many runs span each C
    cmin_adjusted: bool
    runs: list[str]
    excluded: list[str]    # one-layer runs, left out as in Kaplan
    N_eff_range: tuple[float, float] = (0.0, math.inf)  # smallest and largest N_eff of the runs

    @property
    def dominated(self) -> np.ndarray:
        """Points a cheaper point of the envelope beats: just past the end of a run that was lowest,
        the next run is still worse than where the ended one stopped. Such a point is not on the
        compute-efficient frontier (spending less did better), and the optimal N there is unknown."""
        run_min = np.fmin.accumulate(np.where(np.isfinite(self.loss), self.loss, np.inf))
        return np.isfinite(self.loss) & (self.loss > run_min)

    @property
    def usable(self) -> np.ndarray:
        """Grid points at least two runs span (so the minimum is a choice between sizes) and that
        no cheaper point beats."""
        return np.isfinite(self.loss) & (self.coverage >= 2) & ~self.dominated

    @property
    def interior(self) -> np.ndarray:
        """Usable points whose lowest run is neither the smallest nor the largest model: where the
        smallest (largest) model is lowest, the optimal N is only known to lie below (above) it."""
        return self.usable & (self.N_eff > self.N_eff_range[0]) & (self.N_eff < self.N_eff_range[1])

    def to_dict(self) -> dict:
        u = self.usable
        return {"convention": self.convention, "cmin_adjusted": self.cmin_adjusted,
                "n_grid": int(self.C.size), "n_usable": int(u.sum()), "runs": self.runs,
                "excluded_one_layer": self.excluded,
                "C": [float(x) for x in self.C[u]], "loss": [float(x) for x in self.loss[u]],
                "run": [str(x) for x in self.run[u]], "N_eff": [float(x) for x in self.N_eff[u]]}


def _runs(t: Mapping[str, np.ndarray]) -> np.ndarray:
    if "run" in t:
        return np.asarray(t["run"]).astype(str)
    return np.full(_nrows(t), "run")


def cmin_envelope(curves: Mapping[str, np.ndarray], convention: str, B_crit: Fit | None = None,
                  *, n_grid: int = 64, kinds: Sequence[str] | None = ("ladder",),
                  loss: str = "val_loss") -> Envelope:
    """Kaplan's C_min envelope: each run's loss against compute (log-log interpolated between
    evaluations), the lowest loss over runs at each compute of a log grid, one-layer models
    excluded. Fits use Envelope.usable: points spanned by two or more runs and not beaten by a
    cheaper point (runs that stop early leave teeth in the raw minimum). With a B_crit fit each point's compute is first re-expressed as C_min = C / (1 +
    B / B_crit(L)) (eq. 5.5, B = batch_tokens)."""
    if convention not in CONVENTION_COLUMNS:
        raise ValueError(f"unknown convention {convention!r}; known: {', '.join(CONVENTION_COLUMNS)}")
    col = CONVENTION_COLUMNS[convention]
    for need in (col, loss, "tokens"):
        if need not in curves:
            raise ValueError(f"cmin_envelope: curves lack the column {need!r}")
    if n_grid < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    n = _nrows(curves)
    run = _runs(curves)
    C = np.asarray(curves[col], float)
    L = np.asarray(curves[loss], float)
    tok = np.asarray(curves["tokens"], float)
    layers = _col(curves, "n_layer", n, 2.0)
    N = _col(curves, "N", n)
    keep = np.isfinite(C) & (C > 0) & np.isfinite(L) & (L > 0) & (tok > 0)
    if kinds is not None and "kind" in curves:
        keep &= np.isin(np.asarray(curves["kind"]).astype(str), list(kinds))
    one_layer = keep & (layers == 1)
    excluded = sorted(set(run[one_layer]))
    keep &= layers != 1
    if B_crit is not None:
        if "batch_tokens" not in curves:
            raise ValueError("cmin_envelope: C_min needs the column 'batch_tokens'")
        Bt = np.asarray(curves["batch_tokens"], float)
        keep &= np.isfinite(Bt) & (Bt > 0)
        with np.errstate(all="ignore"):
            C = np.where(keep, c_min(C, Bt, B_crit.predict(L=np.where(keep, L, 1.0))), C)
    names = [r for r in dict.fromkeys(run[keep])]
    per_run = []
    for r in names:
        m = keep & (run == r)
        if m.sum() < 2:
            continue
        o = np.argsort(C[m])
        n_eff = float(np.median(params_from_compute(np.asarray(curves[col], float)[m],
                                                    tok[m])))
        per_run.append((r, np.log(C[m][o]), np.log(L[m][o]), float(np.nanmax(N[m])), n_eff))
    if len(per_run) < 2:
        raise ValueError(f"cmin_envelope needs learning curves of at least 2 runs with 2 or more "
                         f"evaluations (one-layer runs excluded), got {len(per_run)}")
    lo = min(p[1][0] for p in per_run)
    hi = max(p[1][-1] for p in per_run)
    grid = np.linspace(lo, hi, n_grid)
    Z = np.full((len(per_run), n_grid), np.inf)
    for i, (_, lc, ll, _, _) in enumerate(per_run):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        Z[i, inside] = np.interp(grid[inside], lc, ll)
    cover = np.isfinite(Z).sum(axis=0)
    best = np.argmin(Z, axis=0)
    has = cover > 0
    env = np.where(has, np.exp(Z[best, np.arange(n_grid)]), np.nan)
    runs = np.array([p[0] for p in per_run], dtype=object)
    return Envelope(convention, np.exp(grid), env, runs[best],
                    np.array([p[3] for p in per_run])[best],
                    np.array([p[4] for p in per_run])[best], cover, B_crit is not None,
                    [p[0] for p in per_run], excluded,
                    (min(p[4] for p in per_run), max(p[4] for p in per_run)))


# --------------------------------------------------------------------------------------------
# A whole sweep
# --------------------------------------------------------------------------------------------

class _Skip(Exception):
    pass


def _summary_from_curves(curves: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row per run (its last evaluation) when summary.csv is missing."""
    run = _runs(curves)
    step = _col(curves, "step", _nrows(curves), 0.0)
    last = []
    for r in dict.fromkeys(run):
        idx = np.flatnonzero(run == r)
        last.append(idx[np.argmax(np.nan_to_num(step[idx], nan=-1))])
    last = np.array(last, dtype=int)
    out = {k: np.asarray(v)[last] for k, v in curves.items()}
    if "tokens" in curves:
        out["D"] = np.asarray(curves["tokens"], float)[last]
    if "val_loss" in curves:
        vl = np.asarray(curves["val_loss"], float)
        out["best_val_loss"] = np.array([np.nanmin(vl[run == r]) if np.any(np.isfinite(vl[run == r]))
                                         else np.nan for r in out.get("run", ["run"])])
    return out


def _final_loss(summary: Mapping[str, np.ndarray]) -> np.ndarray:
    n = _nrows(summary)
    best = _col(summary, "best_val_loss", n)
    final = _col(summary, "val_loss", n)
    return np.where(np.isfinite(best) & (best > 0), best, final).astype(float)


def dataset_size(summary: Mapping[str, np.ndarray]) -> np.ndarray:
    """Kaplan's D of each run: its dataset size (data_tokens) when the data was limited (and
    possibly repeated, with early stopping), else the tokens it saw (D)."""
    n = _nrows(summary)
    seen = _col(summary, "D", n).astype(float)
    limited = _col(summary, "data_tokens", n).astype(float)
    return np.where(np.isfinite(limited) & (limited > 0), limited, seen)


def _select(t: Mapping[str, np.ndarray], kinds: Sequence[str] | None) -> np.ndarray:
    n = _nrows(t)
    m = np.ones(n, bool)
    if kinds is not None and "kind" in t:
        m &= np.isin(np.asarray(t["kind"]).astype(str), list(kinds))
    m &= _col(t, "n_layer", n, 2.0) != 1
    return m


def _finite_pos(*arrays) -> np.ndarray:
    m = np.ones(len(arrays[0]), bool)
    for a in arrays:
        a = np.asarray(a, float)
        m &= np.isfinite(a) & (a > 0)
    return m


def fit_sweep(sweep_dir: str | Path, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              write: bool = True, chinchilla_polish: int | None = 64) -> dict:
    """Every fit the sweep's tables support, for each compute convention side by side.

    Reads <sweep>/curves.csv and <sweep>/summary.csv (summary is derived from curves when absent),
    writes <sweep>/fits.json and <sweep>/fits.csv (write=True) and returns the same dict with Fit
    and Envelope objects (their bootstrap draws kept for plots). Fits the data cannot support are
    listed under "skipped" with the reason.

    Data used: L(N) the ladder's best validation losses; L(D) the data-limited runs (kind "data")
    of their largest model; L(N, D) and Chinchilla every ladder and data run, with D the dataset
    size (dataset_size) and the best (early-stopped) loss; B_crit every evaluation with a b_simple
    (tokens); L(N, S) the ladder's evaluations past 20 % of each run; the C_min envelope, L(C_min)
    and N_opt(C) the ladder's learning curves. One-layer runs are left out of every fit (Kaplan).
    N is N_eff = C / (6 D_seen) of the convention, Kaplan's non-embedding N under kaplan_6N."""
    sweep = Path(sweep_dir)
    cpath, spath = sweep / "curves.csv", sweep / "summary.csv"
    if not cpath.exists() and not spath.exists():
        raise ValueError(f"{sweep}: neither curves.csv nor summary.csv found; run `sixn scale` first")
    curves = read_table(cpath) if cpath.exists() else None
    summary = read_table(spath) if spath.exists() else _summary_from_curves(curves)
    convs = present_conventions(summary) or (present_conventions(curves) if curves else [])
    if curves is not None:
        convs = list(dict.fromkeys(convs + present_conventions(curves)))
    convs = [c for c in CONVENTION_COLUMNS if c in convs]
    out: dict = {"sweep": str(sweep), "conventions": convs, "n_boot": n_boot, "seed": seed,
                 "independent": {}, "by_convention": {c: {} for c in convs}, "skipped": [],
                 "published": PUBLISHED}

    def attempt(slot: dict, name: str, conv: str | None, fn):
        try:
            slot[name] = fn()
        except (_Skip, ValueError) as e:
            slot[name] = {"skipped": True, "reason": str(e)}
            out["skipped"].append({"fit": name, "convention": conv, "reason": str(e)})

    ind = out["independent"]
    ns = _nrows(summary)
    kind_s = np.asarray(summary["kind"]).astype(str) if "kind" in summary else np.full(ns, "ladder")
    loss_s = _final_loss(summary)
    D_s = _col(summary, "D", ns)          # tokens seen: N_eff = C / 6 D
    Dd_s = dataset_size(summary)          # dataset size: Kaplan's D in L(D) and L(N, D)
    N_s = _col(summary, "N", ns)

    # --- B_crit(L) from gradient noise scale estimates
    def bcrit():
        if curves is None or "b_simple" not in curves:
            raise _Skip("no b_simple column in curves.csv")
        b, L = np.asarray(curves["b_simple"], float), np.asarray(curves["val_loss"], float)
        m = _finite_pos(b, L)
        if m.sum() < 3:
            raise _Skip(f"needs at least 3 evaluations with b_simple, got {int(m.sum())}")
        return fit_B_crit(b[m], L[m], n_boot=n_boot, seed=seed)
    attempt(ind, "B_crit", None, bcrit)
    bfit = ind["B_crit"] if isinstance(ind["B_crit"], Fit) else None

    # --- L(D) from the data-limited runs of the largest model among them
    def ld():
        m = (kind_s == "data") & _finite_pos(Dd_s, loss_s, N_s)
        if not m.any():
            raise _Skip("no data-limited runs (kind 'data') in summary.csv")
        m &= N_s == N_s[m].max()
        return fit_L_D(Dd_s[m], loss_s[m], n_boot=n_boot, seed=seed)
    attempt(ind, "L_D", None, ld)

    # --- L(N, S) from the ladder's learning curves past the first 20 % of steps
    def lns():
        if bfit is None:
            raise _Skip("needs a B_crit fit for S_min (eq. 5.4)")
        c = curves
        nc = _nrows(c)
        step = _col(c, "step", nc)
        run = _runs(c)
        last = {r: np.nanmax(step[run == r]) for r in set(run)}
        late = step >= 0.2 * np.array([last[r] for r in run])
        m = _select(c, ("ladder",)) & late & _finite_pos(step, _col(c, "batch_tokens", nc),
                                                         _col(c, "val_loss", nc), _col(c, "N", nc))
        return fit_L_NS(c["N"][m], step[m], c["batch_tokens"][m], c["val_loss"][m], bfit,
                        n_boot=n_boot, seed=seed)
    attempt(ind, "L_NS", None, lns)

    for conv in convs:
        slot = out["by_convention"][conv]
        Cs = _col(summary, CONVENTION_COLUMNS[conv], ns)
        with np.errstate(all="ignore"):
            Neff = params_from_compute(Cs, D_s)
        ladder = _select(summary, ("ladder",)) & _finite_pos(Neff, loss_s)
        both = _select(summary, ("ladder", "data")) & _finite_pos(Neff, Dd_s, loss_s)

        attempt(slot, "L_N", conv, lambda: fit_L_N(Neff[ladder], loss_s[ladder], n_boot=n_boot,
                                                    seed=seed, convention=conv))
        attempt(slot, "L_ND", conv, lambda: fit_L_ND(Neff[both], Dd_s[both], loss_s[both],
                                                     n_boot=n_boot, seed=seed, convention=conv))
        attempt(slot, "chinchilla", conv, lambda: fit_chinchilla(
            Neff[both], Dd_s[both], loss_s[both], n_boot=n_boot, seed=seed, convention=conv,
            n_polish=chinchilla_polish))

        def env():
            if curves is None:
                raise _Skip("no curves.csv")
            return cmin_envelope(curves, conv, bfit)
        attempt(slot, "envelope", conv, env)
        e = slot["envelope"] if isinstance(slot["envelope"], Envelope) else None
        note = ("C_min by eq. 5.5 from the B_crit fit" if bfit is not None
                else "no B_crit fit: C as counted, not C_min")

        def lc():
            if e is None:
                raise _Skip("no C_min envelope")
            u = e.usable
            return fit_L_Cmin(e.C[u], e.loss[u], n_boot=n_boot, seed=seed, convention=conv,
                              notes=note)
        attempt(slot, "L_Cmin", conv, lc)

        def nopt():
            if e is None:
                raise _Skip("no C_min envelope")
            u = e.interior
            if np.unique(e.N_eff[u]).size < 2:
                raise _Skip(f"the envelope has {np.unique(e.N_eff[u]).size} model size(s) lowest "
                            f"away from the ends of the ladder; N_opt(C) needs 2 or more")
            return fit_N_opt(e.C[u], e.N_eff[u], n_boot=n_boot, seed=seed, convention=conv,
                             notes=note + "; N of the lowest run at each compute, points where "
                             "the smallest or largest model is lowest left out (censored)")
        attempt(slot, "N_opt", conv, nopt)

    out["comparison"] = comparison_table(out)
    if write:
        write_fits(out, sweep)
    _LAST_FIT.clear()
    _LAST_FIT[_fit_key(sweep, n_boot, seed, chinchilla_polish)] = out
    return out


_LAST_FIT: dict = {}


def _fit_key(sweep: Path, n_boot: int, seed: int, polish: int | None) -> tuple:
    stamps = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None
                   for p in (sweep / "curves.csv", sweep / "summary.csv"))
    return (str(sweep.resolve()), stamps, n_boot, seed, polish)


def last_fit(sweep_dir: str | Path, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             chinchilla_polish: int | None = 64) -> dict:
    """fit_sweep's result for these tables and options: the one this process computed last when
    the tables have not changed since (plots after fits need not refit), else a fresh, unwritten fit."""
    sweep = Path(sweep_dir)
    if sweep.exists():
        hit = _LAST_FIT.get(_fit_key(sweep, n_boot, seed, chinchilla_polish))
        if hit is not None:
            return hit
    return fit_sweep(sweep, n_boot=n_boot, seed=seed, chinchilla_polish=chinchilla_polish,
                     write=False)


def comparison_table(result: Mapping) -> list[dict]:
    """Rows (fit, param, convention, ours, lo, hi, published, source) for every fitted constant."""
    rows = []
    published = {}
    for src, fits in PUBLISHED.items():
        for fit, ps in fits.items():
            for k, v in ps.items():
                published.setdefault((fit, k), (v, src))
    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)

    slots = [(None, result.get("independent", {}))] + list(result.get("by_convention", {}).items())
    for conv, slot in slots:
        for name, f in slot.items():
            if isinstance(f, Fit):
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
    from sixn.bench.results import write_csv, write_json
    sweep = Path(sweep_dir)
    j = write_json(sweep / "fits.json", dict(result))
    c = write_csv(sweep / "fits.csv", [
        {k: ("" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v)
         for k, v in r.items()} for r in result.get("comparison") or comparison_table(result)])
    return j, c


# --------------------------------------------------------------------------------------------
# A synthetic sweep in the tables' schema, from known laws (tests, demos, plot previews)
# --------------------------------------------------------------------------------------------

SYNTHETIC_LAW = {"E": 1.0, "A": 40.0, "B": 60.0, "alpha": 0.30, "beta": 0.28}
SYNTHETIC_B_CRIT = {"alpha_B": 0.21, "B_star": 2e4}


def synthetic_sweep(sweep_dir: str | Path, *, seed: int = 0, noise: float = 0.005,
                    measured: bool = True, law: Mapping[str, float] = SYNTHETIC_LAW,
                    n_ctx: int = 64, n_vocab: int = 256, n_eval: int = 24,
                    ladder: Sequence[tuple[int, int]] = ((1, 32), (2, 32), (2, 64), (4, 64),
                                                         (4, 128), (4, 256), (8, 256), (8, 384)),
                    ladder_tokens: float = 3e7, data_shape: tuple[int, int] = (4, 128),
                    data_tokens: Sequence[float] = (1e5, 3e5, 1e6, 3e6, 1e7),
                    shapes: Sequence[tuple[int, int]] = ((2, 128), (4, 91), (8, 64), (16, 45)),
                    kinds: Sequence[str] = ("ladder", "data", "shape")) -> Path:
    """Write curves.csv and summary.csv of a sweep whose losses follow a known Chinchilla-form law
    L(N, D) (N non-embedding, D tokens seen) with log-normal noise, whose b_simple follows
    B_crit(L) = B_star / L^(1/alpha_B) (tokens), and whose compute columns come from
    model.flops for each shape. measured=False leaves C_measured empty."""
    from sixn.bench.results import write_csv
    from sixn.model.config import GPTConfig
    from sixn.model.flops import accounting, pf_days

    rng = np.random.default_rng(seed)
    sweep = Path(sweep_dir)
    runs: list[tuple[str, str, int, int, float]] = []
    if "ladder" in kinds:
        runs += [(f"ladder-L{l}-d{d}", "ladder", l, d, ladder_tokens) for l, d in ladder]
    if "data" in kinds:
        runs += [(f"data-L{data_shape[0]}-d{data_shape[1]}-D{D:.0e}", "data", *data_shape, D)
                 for D in data_tokens]
    if "shape" in kinds:
        runs += [(f"shape-L{l}-d{d}", "shape", l, d, ladder_tokens / 3) for l, d in shapes]
    curves, summary = [], []
    batch_size = 32
    bt = batch_size * n_ctx
    for name, kind, n_layer, d_model, D_total in runs:
        cfg = GPTConfig.from_shape(n_layer, d_model, n_ctx=n_ctx, n_vocab=n_vocab,
                                   n_head=max(1, d_model // 32) if d_model % 32 == 0 else 1)
        acc = accounting(cfg)
        per_tok = {c: acc.training_per_token[c] for c in ("kaplan_6N", "kaplan_6N_context",
                                                          "full_model")}
        per_tok["measured"] = acc.training_per_token["full_model"] * 1.04 if measured else math.nan
        data_tokens = D_total if kind == "data" else None
        seen = 2 * D_total if kind == "data" else D_total  # data runs repeat their data once
        steps_total = max(2, int(round(seen / bt)))
        steps = np.unique(np.geomspace(1, steps_total, n_eval).round().astype(int))
        best, last = math.inf, None
        for s in steps:
            tokens = float(s * bt)
            clean = float(_chinchilla(law, acc.N, min(tokens, data_tokens or tokens)))
            val = clean * math.exp(rng.normal(0, noise))
            row = {"run": name, "kind": kind, "n_layer": n_layer, "d_model": d_model,
                   "n_head": cfg.n_head, "d_ff": cfg.d_ff, "n_ctx": n_ctx, "n_vocab": n_vocab,
                   "N": acc.N, "N_total": acc.params.total, "batch_size": batch_size,
                   "batch_tokens": bt, "data_tokens": data_tokens or "", "step": int(s), "tokens": tokens, "lr": 1e-3,
                   "train_loss": clean * math.exp(rng.normal(0, noise)), "val_loss": val,
                   "transfer_loss": (val + 0.4) * math.exp(rng.normal(0, noise)),
                   "b_simple": SYNTHETIC_B_CRIT["B_star"] / val ** (1 / SYNTHETIC_B_CRIT["alpha_B"])
                   * math.exp(rng.normal(0, 5 * noise)),
                   "elapsed_s": s * 1e-3 * acc.N / 1e5}
            for conv, f in per_tok.items():
                C = f * tokens
                row[f"C_{conv}"] = "" if not math.isfinite(C) else C
                row[f"pf_days_{conv}"] = "" if not math.isfinite(C) else pf_days(C)
            curves.append(row)
            best = min(best, val)
            last = row
        summary.append({"run": name, "kind": kind, "N": acc.N, "N_total": acc.params.total,
                        "n_layer": n_layer, "d_model": d_model, "D": last["tokens"],
                        "data_tokens": data_tokens or "",
                        "steps": last["step"], "val_loss": last["val_loss"], "best_val_loss": best,
                        "transfer_loss": last["transfer_loss"],
                        **{f"C_{c}": last[f"C_{c}"] for c in per_tok},
                        "b_simple": last["b_simple"], "fingerprint": f"synthetic-{seed}"})
    write_csv(sweep / "curves.csv", curves)
    write_csv(sweep / "summary.csv", summary)
    return sweep
