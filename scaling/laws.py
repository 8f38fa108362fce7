"""The scaling laws sixn fits, their published constants, and the fitted-law record (Fit).

Laws (Kaplan et al. 2020 unless noted):

    L_N         L = (N_c / N)^alpha_N                              eq. 1.1
    L_N_E       L = E + (N_c / N)^alpha_N                          with an irreducible loss
    L_D         L = (D_c / D)^alpha_D                              eq. 1.2
    L_ND        L = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D   eq. 1.5
    L_NS        L = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S      eq. 1.6, S_min by eq. 5.4
    L_Cmin      L = (C_c / C_min)^alpha_C                          eq. 1.3, C_min by eq. 5.5
    B_crit      B_crit = B_star / L^(1 / alpha_B)                  eq. 1.4 (B in tokens)
    N_opt       N_opt = k C^a                                      eq. 1.7 / Fig. 14
    D_opt       D_opt = k C^b                                      the data side of N_opt
    chinchilla  L = E + A / N^alpha + B / D^beta                   Hoffmann et al. 2022, approach 3

A Law is only its form: `fn(params, **inputs)` broadcasts, so it evaluates point estimates and
stacks of bootstrap draws alike. How each law is fitted lives in kaplan.py (Kaplan's laws),
chinchilla.py (approach 3) and compute_optimal.py (approaches 1 and 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from sixn.model.flops import KAPLAN_FLOPS_PER_PARAM_TOKEN

CI_PERCENTILES = (2.5, 97.5)

# Published constants, for the ours-vs-theirs table.
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
        # Hoffmann et al. 2022, Table 2: N_opt ~ C^a, D_opt ~ C^b
        "approach1": {"a": 0.50, "b": 0.50},
        "approach2": {"a": 0.49, "b": 0.51},
    },
    "besiroglu": {
        "chinchilla": {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.348, "beta": 0.366,
                       "a": 0.513},
    },
    "porian": {
        # N_opt exponent (RefinedWeb) as Porian et al. (2024) change Kaplan's setup one step at a
        # time: counting the last layer's FLOPs, a short warm-up, Chinchilla's cosine decay to the
        # run's own end, then tuned learning rate, batch and AdamW beta2.
        "N_opt": {"a_kaplan_setup": 0.835, "a_head_counted": 0.706, "a_short_warmup": 0.602,
                  "a_cosine_decay": 0.571, "a_tuned": 0.497},
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


def chinchilla_loss(p, N, D):
    """Hoffmann et al.'s parametric loss L = E + A / N^alpha + B / D^beta."""
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
    Law("D_opt", "D_opt = k C^b", ("C",), ("b", "k"),
        lambda p, C: p["k"] * C ** p["b"]),
    Law("chinchilla", "L = E + A/N^alpha + B/D^beta", ("N", "D"),
        ("E", "A", "B", "alpha", "beta"), chinchilla_loss),
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
    warnings: list[str] = field(default_factory=list)  # why the fit may not mean what it says

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
            "notes": self.notes, "warnings": list(self.warnings),
        }


def s_min(S, B, B_crit):
    """Kaplan eq. 5.4: the fewest steps to the same loss, S_min = S / (1 + B_crit / B)."""
    return np.asarray(S, float) / (1.0 + np.asarray(B_crit, float) / np.asarray(B, float))


def c_min(C, B, B_crit):
    """Kaplan eq. 5.5: the least compute to the same loss, C_min = C / (1 + B / B_crit)."""
    return np.asarray(C, float) / (1.0 + np.asarray(B, float) / np.asarray(B_crit, float))


def chinchilla_N_opt(fit: Fit, C) -> np.ndarray:
    """Compute-optimal N of a Chinchilla fit, N_opt = G (C / 6)^a (C in FLOPs, C = 6 N D)."""
    p = fit.params
    return p["G"] * (np.asarray(C, float) / KAPLAN_FLOPS_PER_PARAM_TOKEN) ** p["a"]
