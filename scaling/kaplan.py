"""Fits of Kaplan et al.'s laws: L(N), L(D), L(N, D), L(N, S), L(C_min), B_crit(L) and N_opt(C).

Power laws are straight lines in log-log (fitting.loglinear_fit); L(N) with E, L(N, D) and L(N, S)
are least squares on log residuals of their logsumexp form (fitting.nls_fit). N is whatever count
the caller passes (Kaplan's non-embedding N, or N_eff = C / 6D of another compute convention).
"""

from __future__ import annotations

import numpy as np

from sixn.model.flops import PF_DAY
from sixn.scaling.fitting import (DEFAULT_BOOTSTRAP, check_inputs, loglinear_fit, nls_fit,
                                  start_grid)
from sixn.scaling.laws import Fit, s_min


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
        d = check_inputs("fit_L_N", 3, {"N": 2}, N=N, L=L)
        return loglinear_fit("L_N", d["N"], d["L"], _power_params("alpha_N", "N_c"), n_boot,
                             seed, convention)
    d = check_inputs("fit_L_N (with E)", 4, {"N": 3}, N=N, L=L)
    lN, lL = np.log(d["N"]), np.log(d["L"])

    def resid(th, lN, lL):  # th = (log E, alpha_N, log N_c)
        return np.logaddexp(th[0], th[1] * (th[2] - lN)) - lL

    lmin = np.log(d["L"].min())
    starts = start_grid(lmin + np.log([0.2, 0.5, 0.8, 0.95]), [0.05, 0.1, 0.3, 0.6, 1.0],
                        lN.max() + np.array([1.0, 5.0, 15.0, 30.0]))

    def to_params(th):
        return {"E": np.exp(th[..., 0]), "alpha_N": th[..., 1], "N_c": np.exp(th[..., 2])}
    return nls_fit("L_N_E", resid, (lN, lL), lL, starts, [-30, 1e-4, -50], [10, 5, 200],
                   to_params, n_boot, seed, convention)


def fit_L_D(D, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
            convention: str | None = None) -> Fit:
    """Kaplan's L(D) = (D_c / D)^alpha_D (data-limited, early-stopped runs)."""
    d = check_inputs("fit_L_D", 3, {"D": 2}, D=D, L=L)
    return loglinear_fit("L_D", d["D"], d["L"], _power_params("alpha_D", "D_c"), n_boot, seed,
                         convention)


def fit_L_ND(N, D, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             convention: str | None = None) -> Fit:
    """Kaplan's eq. 1.5, L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D."""
    d = check_inputs("fit_L_ND", 5, {"N": 2, "D": 2}, N=N, D=D, L=L)
    lN, lD, lL = np.log(d["N"]), np.log(d["D"]), np.log(d["L"])

    def resid(th, lN, lD, lL):  # th = (alpha_N, alpha_D, log N_c, log D_c)
        return th[1] * np.logaddexp(th[0] / th[1] * (th[2] - lN), th[3] - lD) - lL

    starts = start_grid([0.03, 0.08, 0.2, 0.5], [0.03, 0.1, 0.3, 0.6],
                        lN.max() + np.array([2.0, 10.0, 25.0]),
                        lD.max() + np.array([2.0, 10.0, 25.0]))

    def to_params(th):
        return {"alpha_N": th[..., 0], "alpha_D": th[..., 1], "N_c": np.exp(th[..., 2]),
                "D_c": np.exp(th[..., 3])}
    return nls_fit("L_ND", resid, (lN, lD, lL), lL, starts, [1e-4, 1e-4, -50, -50],
                   [5, 5, 200, 200], to_params, n_boot, seed, convention)


def fit_L_NS(N, S, B, L, B_crit: Fit, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
             convention: str | None = None) -> Fit:
    """Kaplan's eq. 1.6, L(N, S) = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S, with
    S_min = S / (1 + B_crit(L) / B) (eq. 5.4) from a fitted B_crit(L) law; B in tokens."""
    if not isinstance(B_crit, Fit) or B_crit.law != "B_crit":
        raise ValueError("fit_L_NS needs a B_crit fit (fit_B_crit) to compute S_min")
    d = check_inputs("fit_L_NS", 5, {"N": 2, "S": 2}, N=N, S=S, B=B, L=L)
    Smin = s_min(d["S"], d["B"], B_crit.predict(L=d["L"]))
    lN, lS, lL = np.log(d["N"]), np.log(Smin), np.log(d["L"])

    def resid(th, lN, lS, lL):  # th = (alpha_N, alpha_S, log N_c, log S_c)
        return np.logaddexp(th[0] * (th[2] - lN), th[1] * (th[3] - lS)) - lL

    starts = start_grid([0.03, 0.08, 0.2, 0.5], [0.1, 0.4, 0.8, 1.5],
                        lN.max() + np.array([2.0, 10.0, 25.0]),
                        lS.min() + np.array([-2.0, 0.0, 3.0, 8.0]))

    def to_params(th):
        return {"alpha_N": th[..., 0], "alpha_S": th[..., 1], "N_c": np.exp(th[..., 2]),
                "S_c": np.exp(th[..., 3])}
    return nls_fit("L_NS", resid, (lN, lS, lL), lL, starts, [1e-4, 1e-4, -50, -50],
                   [5, 10, 200, 200], to_params, n_boot, seed, convention,
                   notes="S_min = S / (1 + B_crit(L) / B), eq. 5.4")


def fit_L_Cmin(C_min, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
               convention: str | None = None, notes: str = "") -> Fit:
    """Kaplan's L(C_min) = (C_c / C_min)^alpha_C; C in FLOPs, C_c also given in PF-days."""
    d = check_inputs("fit_L_Cmin", 3, {"C_min": 2}, C_min=C_min, L=L)
    base = _power_params("alpha_C", "C_c")

    def to_params(th):
        p = base(th)
        return {**p, "C_c_pf_days": p["C_c"] / PF_DAY}
    return loglinear_fit("L_Cmin", d["C_min"], d["L"], to_params, n_boot, seed, convention, notes)


def fit_B_crit(b_simple, L, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Fit:
    """Kaplan's B_crit(L) = B_star / L^(1 / alpha_B), from gradient-noise-scale estimates
    (b_simple, in tokens) against the loss at which they were measured."""
    d = check_inputs("fit_B_crit", 3, {"L": 2}, b_simple=b_simple, L=L)

    def to_params(th):  # log B = log B_star - (1 / alpha_B) log L
        with np.errstate(all="ignore"):
            return {"alpha_B": -1.0 / th[..., 1], "B_star": np.exp(th[..., 0])}
    return loglinear_fit("B_crit", d["L"], d["b_simple"], to_params, n_boot, seed, None)


def fit_N_opt(C, N_opt, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              convention: str | None = None, notes: str = "") -> Fit:
    """N_opt = k C^a (C in FLOPs); k_pf_days is k for C in PF-days, as Kaplan quotes it."""
    d = check_inputs("fit_N_opt", 3, {"C": 2}, C=C, N_opt=N_opt)

    def to_params(th):
        a, k = th[..., 1], np.exp(th[..., 0])
        return {"a": a, "k": k, "k_pf_days": k * PF_DAY ** a}
    return loglinear_fit("N_opt", d["C"], d["N_opt"], to_params, n_boot, seed, convention, notes)


def fit_D_opt(C, D_opt, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
              convention: str | None = None, notes: str = "") -> Fit:
    """D_opt = k C^b (C in FLOPs, D in tokens): the data side of the compute-optimal allocation."""
    d = check_inputs("fit_D_opt", 3, {"C": 2}, C=C, D_opt=D_opt)

    def to_params(th):
        b, k = th[..., 1], np.exp(th[..., 0])
        return {"b": b, "k": k, "k_pf_days": k * PF_DAY ** b}
    return loglinear_fit("D_opt", d["C"], d["D_opt"], to_params, n_boot, seed, convention, notes)
