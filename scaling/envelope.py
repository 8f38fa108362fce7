"""Kaplan's C_min envelope: the lowest loss any run of a sweep reaches at each compute.

Each run's learning curve (loss against cumulative compute under one convention) is interpolated
log-log between its evaluations onto a shared log grid of compute; the envelope is the minimum over
runs at each grid point, with the run that attains it. One-layer models are left out (Kaplan).
With a B_crit(L) fit, each evaluation's compute is first re-expressed as
C_min = C / (1 + B / B_crit(L)) (eq. 5.5). L(C_min) and approach 1 of compute_optimal.py are read
off this envelope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sixn.model.flops import params_from_compute
from sixn.scaling.laws import Fit, c_min
from sixn.scaling.tables import CONVENTION_COLUMNS, Table, col, nrows, run_names


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



def cmin_envelope(curves: Table, convention: str, B_crit: Fit | None = None,
                  *, n_grid: int = 64, kinds: Sequence[str] | None = ("ladder",),
                  loss: str = "val_loss") -> Envelope:
    """Kaplan's C_min envelope: each run's loss against compute (log-log interpolated between
    evaluations), the lowest loss over runs at each compute of a log grid, one-layer models
    excluded. Fits use Envelope.usable: points spanned by two or more runs and not beaten by a
    cheaper point (runs that stop early leave teeth in the raw minimum). With a B_crit fit each
    point's compute is first re-expressed as C_min = C / (1 + B / B_crit(L)) (eq. 5.5,
    B = batch_tokens)."""
    if convention not in CONVENTION_COLUMNS:
        raise ValueError(f"unknown convention {convention!r}; known: {', '.join(CONVENTION_COLUMNS)}")
    c_col = CONVENTION_COLUMNS[convention]
    for need in (c_col, loss, "tokens"):
        if need not in curves:
            raise ValueError(f"cmin_envelope: curves lack the column {need!r}")
    if n_grid < 2:
        raise ValueError(f"n_grid must be >= 2, got {n_grid}")
    n = nrows(curves)
    run = run_names(curves)
    C = np.asarray(curves[c_col], float)
    L = np.asarray(curves[loss], float)
    tok = np.asarray(curves["tokens"], float)
    layers = col(curves, "n_layer", n, 2.0)
    N = col(curves, "N", n)
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
        n_eff = float(np.median(params_from_compute(np.asarray(curves[c_col], float)[m],
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
