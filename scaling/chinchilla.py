"""Chinchilla approach 3: the parametric loss L = E + A / N^alpha + B / D^beta fitted to every run.

Follows Hoffmann et al. 2022 and Besiroglu et al. 2024: minimise
sum_i Huber_delta(LSE(e, a - alpha log N_i, b - beta log D_i) - log L_i), delta = 1e-3, with
L-BFGS-B (analytic gradient, tolerances tight enough that the optimiser does not stop early:
Besiroglu's lesson) from a grid of starts. The objective is evaluated on the whole grid first
(vectorised) and L-BFGS-B runs from the `n_polish` best grid points (all of them with
n_polish=None); the best end point by the same objective wins. E = exp(e), A = exp(a), B = exp(b);
derived a_opt = beta / (alpha + beta), b_opt = alpha / (alpha + beta),
G = (alpha A / (beta B))^(1 / (alpha + beta)), and N_opt = G (C / 6)^a_opt.
Bootstrap: rows resampled with replacement, each resample polished from the point estimate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import optimize

from sixn.model.flops import KAPLAN_FLOPS_PER_PARAM_TOKEN
from sixn.scaling.fitting import (DEFAULT_BOOTSTRAP, HUBER_DELTA, check_inputs, huber, make_fit,
                                  resamples, single_thread_blas, start_grid)
from sixn.scaling.laws import Fit

HOFFMANN_GRID = (np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 25.1, 5.0), np.arange(0.0, 25.1, 5.0),
                 np.arange(0.0, 2.01, 0.5), np.arange(0.0, 2.01, 0.5))
_CHIN_BOUNDS = [(None, None), (None, None), (None, None), (0.0, 10.0), (0.0, 10.0)]


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


def objective_and_gradient(theta, lN, lD, lL, delta):
    lse, w = _chinchilla_lse(theta, lN, lD)
    r = lse - lL
    g = np.clip(r, -delta, delta)  # Huber'(r)
    grad = np.array([np.sum(g * w[0]), np.sum(g * w[1]), np.sum(g * w[2]),
                     -np.sum(g * w[1] * lN), -np.sum(g * w[2] * lD)])
    return float(huber(r, delta).sum()), grad


def _lbfgsb(theta0, lN, lD, lL, delta):
    return optimize.minimize(objective_and_gradient, theta0, args=(lN, lD, lL, delta), jac=True,
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


DEGENERATE_EXPONENT = 1e-3   # alpha or beta below this: the optimum is at the bound


def check_optimum(theta: np.ndarray) -> None:
    """ValueError for a degenerate optimum: alpha or beta at its lower bound (0) means the loss
    does not fall with N or D in the data, and a = beta / (alpha + beta), G and N_opt(C) are then
    undefined (0/0) or meaningless."""
    p = _chinchilla_params(np.asarray(theta, float))
    al, be = float(p["alpha"]), float(p["beta"])
    if al < DEGENERATE_EXPONENT or be < DEGENERATE_EXPONENT or not np.isfinite(float(p["a"])):
        flat = " and ".join(x for x, v in (("N", al), ("D", be)) if v < DEGENERATE_EXPONENT)
        raise ValueError(f"fit_chinchilla: degenerate optimum (alpha = {al:.3g}, beta = {be:.3g}): "
                         f"the loss does not fall with {flat or 'N and D'} in these data, so "
                         f"E + A/N^alpha + B/D^beta and its compute-optimal allocation are not "
                         f"determined; check the table (a loss that rises with size?)")


@single_thread_blas()
def fit_chinchilla(N, D, L, *, delta: float = HUBER_DELTA, grid: Sequence[Sequence[float]] = HOFFMANN_GRID,
                   n_polish: int | None = 64, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                   convention: str | None = None) -> Fit:
    """Chinchilla approach 3: L = E + A / N^alpha + B / D^beta by Huber (delta) on log residuals,
    L-BFGS-B from the n_polish best points of `grid` (None: every grid point). Derived:
    a = beta / (alpha + beta), b = alpha / (alpha + beta), G with N_opt = G (C / 6)^a."""
    d = check_inputs("fit_chinchilla", 6, {"N": 2, "D": 2}, N=N, D=D, L=L)
    if not delta > 0:
        raise ValueError(f"fit_chinchilla: delta must be > 0, got {delta}")
    lN, lD, lL = np.log(d["N"]), np.log(d["D"]), np.log(d["L"])
    starts = start_grid(*grid)
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
    idx = resamples(lL.size, n_boot, seed)
    boot = np.full((n_boot, 5), np.nan)
    for b in range(n_boot):
        j = idx[b]
        r = _lbfgsb(theta, lN[j], lD[j], lL[j], delta)
        if np.isfinite(r.fun):
            boot[b] = r.x
    check_optimum(theta)
    lse, _ = _chinchilla_lse(theta, lN, lD)
    notes = (f"Huber delta {delta:g} on log residuals; L-BFGS-B from {order.size} of "
             f"{starts.shape[0]} grid starts; N_opt = G (C/{KAPLAN_FLOPS_PER_PARAM_TOKEN})^a")
    return make_fit("chinchilla", theta, boot, _chinchilla_params, lL, lse, convention,
                    float(best.fun), notes)
