"""The fitting machinery every law shares: input checks, least squares in log space, robust
(Huber) losses, and percentile-bootstrap intervals.

- Pure power laws are straight lines in log-log and are fitted by ordinary least squares (closed
  form, so the bootstrap is vectorised over resamples): loglinear_fit.
- Laws with a sum of terms are least squares on log residuals of their logsumexp form
  (scipy.optimize.least_squares, trust region) from a grid of starts, keeping the best: nls_fit.
- Intervals: percentile bootstrap (2.5 %, 97.5 %). Points are resampled with replacement, seeded;
  each resample is refitted from the point estimate (one start). Points that are not independent
  (evaluations along one learning curve) make the intervals optimistic.
- Optimisers make many tiny BLAS calls; single_thread_blas (threadpoolctl) keeps BLAS on one thread
  inside them, since on a busy machine BLAS threads make each call 10-20x slower.
- Every fit is checked (assess) and carries its warnings: an exponent that is negative (the loss
  rises where the law says it falls) or implausibly large, fewer than MIN_DOF degrees of freedom
  (points minus parameters: a bootstrap interval on so few is not a measure of anything), and
  R^2 (log) below R2_WARN, and for a loss that should fall with N or D, a loss that rises from
  one size to the next (rising). The fit is kept; the warning goes with it into every output.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from sixn.scaling.laws import CI_PERCENTILES, LAWS, Fit

HUBER_DELTA = 1e-3
DEFAULT_BOOTSTRAP = 100
MAX_BOOTSTRAP = 10_000   # percentiles settle long before; more only costs time (and memory)
R2_WARN = 0.9            # R^2 of the log of the fitted quantity below this: the law fits poorly
MIN_DOF = 3              # fewer residual degrees of freedom: the fit and its interval say little

# The exponents of each law and the range where a value is plausible (published values lie well
# inside: Kaplan's alpha_N 0.076, alpha_D 0.095, alpha_C 0.050, alpha_S 0.76, alpha_B 0.21, a 0.73;
# Chinchilla's alpha 0.34, beta 0.28, a 0.50). A value <= 0 means the law's direction is reversed.
EXPONENTS: dict[str, dict[str, tuple[float, float]]] = {
    "L_N": {"alpha_N": (0.0, 1.5)}, "L_N_E": {"alpha_N": (0.0, 3.0)},
    "L_D": {"alpha_D": (0.0, 1.5)}, "L_ND": {"alpha_N": (0.0, 1.5), "alpha_D": (0.0, 1.5)},
    "L_NS": {"alpha_N": (0.0, 1.5), "alpha_S": (0.0, 3.0)}, "L_Cmin": {"alpha_C": (0.0, 1.5)},
    "B_crit": {"alpha_B": (0.0, 2.0)}, "N_opt": {"a": (0.0, 1.0)}, "D_opt": {"b": (0.0, 1.0)},
    "chinchilla": {"alpha": (0.0, 2.0), "beta": (0.0, 2.0)},
}
# What a reversed exponent means, by law: (quantity, variable).
_DIRECTION = {"L_N": ("loss", "N"), "L_N_E": ("loss", "N"), "L_D": ("loss", "D"),
              "L_Cmin": ("loss", "compute"), "B_crit": ("critical batch", "a lower loss"),
              "N_opt": ("compute-optimal N", "compute"), "D_opt": ("compute-optimal D", "compute")}


def assess(law: str, params: Mapping[str, float], n: int, r2_log: float) -> list[str]:
    """The warnings of a fit of `law` (see the module doc)."""
    out = []
    for name, (lo, hi) in EXPONENTS.get(law, {}).items():
        v = params.get(name, math.nan)
        if not math.isfinite(v):
            out.append(f"{name} is not a number: the fit failed to find one")
        elif v <= lo:
            what, of = _DIRECTION.get(law, ("loss", name.split("_")[-1]))
            if law in ("N_opt", "D_opt"):
                how = "does not grow with compute in these data (it falls or stays flat)"
            elif law == "B_crit":
                how = "does not grow as the loss falls in these data"
            else:
                how = f"does not fall with {of} in these data (it rises or stays flat)"
            out.append(f"{name} = {v:.3g} is not positive: the {what} {how}, so the power law does "
                       f"not describe them")
        elif v > hi:
            out.append(f"{name} = {v:.3g} is implausibly large (above {hi:g}; published values are "
                       f"far smaller): too few or too noisy points, or not the regime of this law")
    k = len(LAWS[law].params) if law in LAWS else 0
    dof = n - k
    if dof < MIN_DOF:
        out.append(f"only {dof} degree(s) of freedom ({n} points, {k} parameters): the fit and its "
                   f"bootstrap interval say little; use at least {k + MIN_DOF} points")
    if math.isfinite(r2_log) and r2_log < R2_WARN:
        out.append(f"R^2 (log) = {r2_log:.3f} is below {R2_WARN:g}: the law explains these data "
                   f"poorly")
    return out


RISE_TOL = 0.005         # a loss higher by more than this than at the next smaller x is a rise
_FALLING = {"L_N": "N", "L_N_E": "N", "L_D": "D"}   # laws of a loss that falls with one variable


def rising(law: str, x: np.ndarray, y: np.ndarray) -> list[str]:
    """A warning where the data of a falling law rise: the loss at a larger x above that at the
    next smaller one by more than RISE_TOL (a size that trained badly, a run not converged)."""
    if law not in _FALLING or x.size < 2:
        return []
    o = np.argsort(x, kind="stable")
    xs, ys = x[o], y[o]
    up = np.flatnonzero(ys[1:] > ys[:-1] * (1 + RISE_TOL))
    if not up.size:
        return []
    v = _FALLING[law]
    where = ", ".join(f"{v} = {xs[i]:.3g} -> {xs[i + 1]:.3g} ({ys[i]:.4g} -> {ys[i + 1]:.4g})"
                      for i in up[:3])
    return [f"the loss rises with {v} at {up.size} of {xs.size - 1} steps ({where}"
            f"{' ...' if up.size > 3 else ''}): a size that trained worse than a smaller one"]


def cap_bootstrap(n_boot: int) -> tuple[int, str | None]:
    """n_boot capped at MAX_BOOTSTRAP, and the message saying so (None when not capped)."""
    if n_boot <= MAX_BOOTSTRAP:
        return n_boot, None
    return MAX_BOOTSTRAP, (f"--bootstrap {n_boot} capped at {MAX_BOOTSTRAP}: the 2.5-97.5 % "
                           f"percentiles are settled long before, more resamples only cost time")


@contextmanager
def single_thread_blas():
    """Run BLAS single-threaded inside the block (also usable as a decorator: the limit is taken
    on each entry and restored on exit)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def huber(r, delta: float = HUBER_DELTA):
    """Huber loss: quadratic within delta, linear beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def check_positive(name: str, x, fit: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise ValueError(f"{fit}: {name} must be finite and > 0; bad values at index {shown} "
                         f"(e.g. {a[bad[0]]!r})")
    return a


def check_inputs(fit: str, min_points: int, distinct: Mapping[str, int] | None = None,
                 **arrays) -> dict[str, np.ndarray]:
    out = {k: check_positive(k, v, fit) for k, v in arrays.items()}
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


def resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def r2_score(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - yhat) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def percentile_intervals(samples: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    out = {}
    for k, v in samples.items():
        v = np.asarray(v, dtype=float)
        v = v[np.isfinite(v)]
        out[k] = tuple(float(q) for q in np.percentile(v, CI_PERCENTILES)) if v.size else (
            math.nan, math.nan)
    return out


def make_fit(law: str, theta: np.ndarray, boot: np.ndarray, to_params, y_log: np.ndarray,
             y_log_hat: np.ndarray, convention: str | None, objective: float | None,
             notes: str = "") -> Fit:
    params = {k: float(v) for k, v in to_params(np.asarray(theta, dtype=float)).items()}
    ok = np.all(np.isfinite(boot), axis=1) if boot.size else np.zeros(0, bool)
    with np.errstate(all="ignore"):
        samples = {k: np.asarray(v, dtype=float) for k, v in to_params(boot[ok]).items()} \
            if ok.any() else {}
    r2 = r2_score(y_log, y_log_hat)
    return Fit(law, params, percentile_intervals(samples) if samples else
               {k: (math.nan, math.nan) for k in params},
               int(y_log.size), r2, convention, int(ok.sum()), objective,
               notes, samples, assess(law, params, int(y_log.size), r2))


def ols_rows(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slope and intercept of y = c + s x for every row of X, Y (vectorised over resamples)."""
    xm = X.mean(axis=-1, keepdims=True)
    ym = Y.mean(axis=-1, keepdims=True)
    sxx = np.sum((X - xm) ** 2, axis=-1)
    sxy = np.sum((X - xm) * (Y - ym), axis=-1)
    with np.errstate(all="ignore"):
        s = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), np.nan)
    return s, ym[..., 0] - s * xm[..., 0]


def loglinear_fit(law: str, x: np.ndarray, y: np.ndarray, to_params, n_boot: int, seed: int,
                  convention: str | None, notes: str = "") -> Fit:
    """log y = c + s log x by least squares; to_params maps theta[..., (c, s)] to the law's."""
    lx, ly = np.log(x), np.log(y)
    s, c = ols_rows(lx[None], ly[None])
    theta = np.array([c[0], s[0]])
    idx = resamples(lx.size, n_boot, seed)
    bs, bc = ols_rows(lx[idx], ly[idx]) if n_boot else (np.zeros(0), np.zeros(0))
    boot = np.stack([bc, bs], axis=-1) if n_boot else np.zeros((0, 2))
    yhat = theta[0] + theta[1] * lx
    fit = make_fit(law, theta, boot, to_params, ly, yhat, convention,
                   float(np.sum((ly - yhat) ** 2)), notes)
    fit.warnings += rising(law, x, y)
    return fit


@single_thread_blas()
def nls_fit(law: str, resid, data: tuple[np.ndarray, ...], y_log: np.ndarray, starts: np.ndarray,
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
    idx = resamples(y_log.size, n_boot, seed)
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
    return make_fit(law, theta, boot, to_params, y_log, y_log + r_hat, convention,
                    float(np.sum(r_hat ** 2)), notes)


def start_grid(*axes: Sequence[float]) -> np.ndarray:
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
