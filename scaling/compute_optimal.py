"""Compute-optimal allocation N_opt(C) and D_opt(C): Chinchilla's approaches 1 and 2.

Approach 1 (Hoffmann et al. 2022, their section 3.1): the lowest loss any run reaches at each
compute (the envelope of the learning curves, envelope.cmin_envelope without the C_min
adjustment), the run that reaches it, its N and the tokens D it had seen there; then
N_opt = k C^a and D_opt = k C^b by least squares in log-log. Points where the smallest or largest
model is lowest are left out (censored: the optimum lies beyond the sizes tried). Intermediate
points of a run whose learning rate has not finished decaying are not the loss that run length
would give, and the bootstrap resamples points of the same curves as independent: its intervals
are optimistic.

Approach 2 (IsoFLOP profiles, their section 3.2): runs trained to one of several fixed budgets,
each with its own schedule ending at its budget. For each budget, the final loss against log N is
fitted by a parabola, L = c0 + c1 x + c2 x^2 with x = ln N, over the (at most) 5 sizes around the
lowest loss, and its vertex is that budget's N_opt. A local fit keeps the cubic and higher terms of
an asymmetric profile from pulling the vertex when a budget's sizes span a wide range.
A parabola in ln N is the second-order expansion of any smooth profile around its minimum; for a
Chinchilla-form loss E + A/N^alpha + B/D^beta on C = 6ND, the profile around its minimum has the
same shape at every budget up to a scale factor on L - E, so fitting L (not log L) makes any
bias of the vertex a constant offset in ln N, which leaves the exponent unchanged. D_opt at the
vertex is interpolated linearly in (ln N, ln D) between the runs of the profile (C / 6N_opt when
a table gives no D). Then N_opt = k C^a and D_opt = k C^b over the budgets.

A budget is left out, with the reason, when it has fewer than 3 sizes (a parabola needs 3), when
its lowest loss is at its smallest or largest N (the minimum is not bracketed: extrapolating the
parabola past the sizes tried is a guess), when the parabola is not convex, or when its vertex
falls outside the sizes tried.

Model size. Under each convention the size is the count that convention implies,
N_eff = C / (6 D) (as everywhere in sixn's fits: Kaplan's non-embedding N under kaplan_6N,
N + d V with the head counted, the full-model FLOPs per token over 6 under full_model), so
C = 6 N_eff D holds and a + b = 1 for the exponents of N_eff and D. The exponent of the models'
non-embedding N (a_N, from the vertex mapped onto N between the runs of the profile) is reported
beside it: counted with the head, small models are larger in N_eff than in N, and the two
exponents part.

Other compute conventions. The runs of a budget spend equal compute only under the convention
the budget was set in (the "budget convention"); counted another way (with the head, measured),
small models of one budget spent relatively more than large ones. Under such a convention X the
profiles are rebuilt: for each model size, its final losses at the budgets it was trained to are
points (C_X, L) of fully-decayed runs; ln L is interpolated linearly in ln C_X between them (never
extrapolated, except by less than the grouping tolerance) at one level per budget, the geometric
mean of that budget's C_X. Each level's profile is then fitted as above. This uses only end-of-
schedule losses, so the rebuilt profiles are as real as the measured ones; a size trained at one
budget only contributes where its own C_X is at the level.

Intervals (approach 2): a residual bootstrap. The residuals of the budget-convention parabolas
(pooled, scaled by sqrt(n / (n - 3)) for the three fitted coefficients) are resampled onto every
run's fitted loss, and the whole analysis (every profile, every convention, the power-law fits)
is redone on each resample; percentile intervals (2.5 %, 97.5 %) of N_opt per budget and of the
exponents follow. The same resamples serve every convention, so differences between conventions
have paired intervals. With no residual degrees of freedom (only 3-point profiles) there are no
intervals. The intervals cover the noise of the losses, not the parabola's misfit: where a
profile is strongly asymmetric (small models dominated by the head, under a convention that
counts it) the vertex can sit 10-20 % off the true minimum at low noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from sixn.model.flops import KAPLAN_FLOPS_PER_PARAM_TOKEN, PF_DAY
from sixn.scaling.envelope import Envelope
from sixn.scaling.fitting import DEFAULT_BOOTSTRAP, make_fit, ols_rows
from sixn.scaling.kaplan import fit_D_opt, fit_N_opt
from sixn.scaling.laws import CI_PERCENTILES, Fit

ISOFLOP_TOL = 0.02     # compute within 2 % is one budget (schedules end within half a step)
MIN_SIZES = 3          # a parabola needs three sizes
MIN_BUDGETS = 2        # N_opt = k C^a needs two budgets at least
LOCAL_SIZES = 5        # the parabola is fitted to the 5 sizes around the lowest loss


class IsoflopError(ValueError):
    """An IsoFLOP table that approach 2 cannot use; the message says which budget and why."""


# --------------------------------------------------------------------------------------------
# Budgets and profiles
# --------------------------------------------------------------------------------------------

def budget_groups(C: np.ndarray, tol: float = ISOFLOP_TOL) -> np.ndarray:
    """A budget index for every row: rows sorted by C, a new budget wherever C exceeds the
    current budget's first C by more than `tol` (relative). Index 0 is the smallest budget."""
    C = np.asarray(C, float)
    order = np.argsort(C, kind="stable")
    out = np.empty(C.size, int)
    g, start = -1, -math.inf
    for i in order:
        if C[i] > start * (1 + tol):
            g += 1
            start = C[i]
        out[i] = g
    return out


@dataclass
class Profile:
    """One IsoFLOP profile: the final losses of several sizes at one compute level."""
    C: float                   # the level (FLOPs under this profile's convention)
    N: np.ndarray              # sizes, ascending (N_eff = C / 6D of the convention)
    loss: np.ndarray
    D: np.ndarray              # tokens of each run
    N_model: np.ndarray        # the models' non-embedding N (ascending with N)
    rebuilt: bool = False      # interpolated from other budgets (not the budget convention)
    status: str = "ok"         # ok | few_sizes | edge | not_convex | outside
    reason: str = ""
    coef: tuple[float, float, float] | None = None   # c0, c1, c2 of L = c0 + c1 u + c2 u^2
    x0: float = 0.0            # u = ln N - x0
    fit_range: tuple[int, int] = (0, 0)   # the points [lo, hi) the parabola was fitted to
    d_from_size: bool = False  # D_opt = C / (6 N_opt) (N is N_eff), else interpolated in ln N
    N_opt: float = math.nan
    D_opt: float = math.nan
    N_model_opt: float = math.nan
    loss_opt: float = math.nan
    N_opt_interval: tuple[float, float] = (math.nan, math.nan)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fitted(self, N) -> np.ndarray:
        """The parabola at sizes N (NaN without a fit)."""
        if self.coef is None:
            return np.full(np.shape(N), np.nan)
        u = np.log(np.asarray(N, float)) - self.x0
        c0, c1, c2 = self.coef
        return c0 + c1 * u + c2 * u * u

    def to_dict(self) -> dict:
        def clean(v):
            return None if v is None or not np.isfinite(v) else float(v)
        return {"C": clean(self.C), "C_pf_days": clean(self.C / PF_DAY), "n_sizes": int(self.N.size),
                "N": [float(x) for x in self.N], "D": [float(x) for x in self.D],
                "N_model": [float(x) for x in self.N_model],
                "loss": [float(x) for x in self.loss], "rebuilt": self.rebuilt,
                "status": self.status, "reason": self.reason,
                "parabola": None if self.coef is None else {
                    "c0": self.coef[0], "c1": self.coef[1], "c2": self.coef[2], "x0": self.x0,
                    "fitted_points": list(self.fit_range),
                    "form": "L = c0 + c1 u + c2 u^2, u = ln N - x0"},
                "N_opt": clean(self.N_opt), "D_opt": clean(self.D_opt),
                "N_model_opt": clean(self.N_model_opt),
                "loss_opt": clean(self.loss_opt),
                "N_opt_interval": [clean(v) for v in self.N_opt_interval]}


def fit_profile(C: float, N, loss, D=None, N_model=None, *, rebuilt: bool = False,
                d_from_size: bool = False) -> Profile:
    """The parabola in ln N through one profile and its vertex, or the reason it has none.
    D None: D = C / (6 N), Chinchilla's C = 6 N D. N_model: the models' own count (default N)."""
    N, loss = np.asarray(N, float), np.asarray(loss, float)
    D = C / (KAPLAN_FLOPS_PER_PARAM_TOKEN * N) if D is None else np.asarray(D, float)
    N_model = N if N_model is None else np.asarray(N_model, float)
    o = np.argsort(N, kind="stable")
    p = Profile(float(C), N[o], loss[o], D[o], N_model[o], rebuilt, d_from_size=d_from_size)
    sizes = np.unique(p.N).size
    if sizes < MIN_SIZES:
        p.status, p.reason = "few_sizes", (f"{sizes} size(s); a parabola needs {MIN_SIZES} "
                                           f"distinct N")
        return p
    x = np.log(p.N)
    lo, hi = _local(p.loss)
    p.x0 = float(x[lo:hi].mean())
    p.coef = _parabola(x[lo:hi] - p.x0, p.loss[lo:hi])
    p.fit_range = (lo, hi)
    _vertex(p)
    return p


def _local(loss: np.ndarray) -> tuple[int, int]:
    """The LOCAL_SIZES consecutive points centred on the lowest loss (all of them when fewer)."""
    n = loss.size
    if n <= LOCAL_SIZES:
        return 0, n
    i = int(np.argmin(loss))
    lo = min(max(0, i - LOCAL_SIZES // 2), n - LOCAL_SIZES)
    return lo, lo + LOCAL_SIZES


def _parabola(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    A = np.stack([np.ones_like(u), u, u * u], axis=-1)
    c, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(c[0]), float(c[1]), float(c[2])


def _vertex(p: Profile) -> None:
    """Set N_opt, D_opt and loss_opt of a fitted profile, or its status and reason."""
    lowest = int(np.argmin(p.loss))
    c0, c1, c2 = p.coef
    if p.N[lowest] in (p.N[0], p.N[-1]):
        side = "smallest" if p.N[lowest] == p.N[0] else "largest"
        p.status, p.reason = "edge", (f"lowest loss at the {side} size (N = {p.N[lowest]:.4g}): "
                                      f"the minimum is not bracketed")
        return
    if not c2 > 0:
        p.status, p.reason = "not_convex", "the parabola in ln N has no minimum (c2 <= 0)"
        return
    u = -c1 / (2 * c2)
    x = u + p.x0
    lx = np.log(p.N)
    lo, hi = p.fit_range
    if not lx[lo] <= x <= lx[hi - 1]:
        p.status, p.reason = "outside", (f"the parabola's vertex N = {math.exp(x):.4g} lies "
                                         f"outside the sizes tried")
        return
    p.status, p.reason = "ok", ""
    p.N_opt = math.exp(x)
    p.D_opt = (p.C / (KAPLAN_FLOPS_PER_PARAM_TOKEN * p.N_opt) if p.d_from_size
               else math.exp(np.interp(x, lx, np.log(p.D))))
    p.N_model_opt = math.exp(np.interp(x, lx, np.log(p.N_model)))
    p.loss_opt = c0 + c1 * u + c2 * u * u


# --------------------------------------------------------------------------------------------
# Runs: the table approach 2 reads
# --------------------------------------------------------------------------------------------

@dataclass
class IsoflopRuns:
    """Final losses of IsoFLOP runs: one row per run; C maps each convention to its compute.
    N is the models' own parameter count (non-embedding for sweeps; a table's N as given);
    sizes_from_compute False (tables) keeps N as the size under every convention instead of
    N_eff = C / 6D."""
    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    C: dict[str, np.ndarray]
    budget_convention: str
    budget: np.ndarray | None = None   # budget index of each run (default: budget_groups)
    sizes_from_compute: bool = True

    def __post_init__(self) -> None:
        if self.budget_convention not in self.C:
            raise IsoflopError(f"no compute column for the budget convention "
                               f"{self.budget_convention!r}; have {', '.join(self.C)}")
        for name, a in (("N", self.N), ("D", self.D), ("loss", self.loss),
                        *((f"C ({k})", v) for k, v in self.C.items())):
            a = np.asarray(a, float)
            bad = np.flatnonzero(~np.isfinite(a) | (a <= 0))
            if bad.size:
                raise IsoflopError(f"{name} must be finite and > 0; bad values at rows "
                                   f"{', '.join(str(i + 1) for i in bad[:10])}")
        if self.budget is None:
            self.budget = budget_groups(self.C[self.budget_convention])

    def size(self, convention: str) -> np.ndarray:
        """Each run's size under a convention: N_eff = C / (6 D), or N for a table."""
        if not self.sizes_from_compute:
            return np.asarray(self.N, float)
        return self.C[convention] / (KAPLAN_FLOPS_PER_PARAM_TOKEN * self.D)

    def with_loss(self, loss: np.ndarray) -> "IsoflopRuns":
        return IsoflopRuns(self.N, self.D, loss, self.C, self.budget_convention, self.budget,
                           self.sizes_from_compute)


def direct_profiles(runs: IsoflopRuns) -> list[Profile]:
    """The measured IsoFLOP profiles, one per budget, in the budget convention."""
    conv = runs.budget_convention
    Cb, size = runs.C[conv], runs.size(conv)
    out = []
    for g in np.unique(runs.budget):
        m = runs.budget == g
        level = float(np.exp(np.log(Cb[m]).mean()))
        out.append(fit_profile(level, size[m], runs.loss[m], runs.D[m], runs.N[m],
                               d_from_size=runs.sizes_from_compute))
    return out


def rebuilt_profiles(runs: IsoflopRuns, convention: str, tol: float = ISOFLOP_TOL) -> list[Profile]:
    """Profiles under another convention: per model, ln L interpolated in ln C_X between its
    runs' final losses, at one level per budget (the geometric mean of that budget's C_X)."""
    CX = runs.C[convention]
    lC, lL = np.log(CX), np.log(runs.loss)
    size = runs.size(convention)
    out = []
    for g in np.unique(runs.budget):
        level = float(np.exp(lC[runs.budget == g].mean()))
        lv = math.log(level)
        Ns, Ls, Ms = [], [], []
        for n in np.unique(runs.N):
            m = runs.N == n
            o = np.argsort(lC[m])
            c, ll = lC[m][o], lL[m][o]
            if c[0] - math.log1p(tol) <= lv <= c[-1] + math.log1p(tol):
                v = min(max(lv, c[0]), c[-1])
                Ns.append(float(np.median(size[m])))
                Ls.append(math.exp(np.interp(v, c, ll)))
                Ms.append(n)
        Ns = np.array(Ns, float)
        out.append(fit_profile(level, Ns, np.array(Ls), level / (KAPLAN_FLOPS_PER_PARAM_TOKEN * Ns)
                               if Ns.size else Ns, np.array(Ms, float), rebuilt=True,
                               d_from_size=True))
    return out


def profiles(runs: IsoflopRuns, convention: str) -> list[Profile]:
    if convention == runs.budget_convention:
        return direct_profiles(runs)
    return rebuilt_profiles(runs, convention)


# --------------------------------------------------------------------------------------------
# Approach 2
# --------------------------------------------------------------------------------------------

@dataclass
class ComputeOptimal:
    """N_opt(C) and D_opt(C) under one convention, by approach 1 or 2."""
    method: str                          # "approach1" | "approach2"
    convention: str
    N_opt: Fit | None                    # N_eff = C / 6D of the convention: exponent a
    D_opt: Fit | None                    # tokens: exponent b
    N_model_opt: Fit | None = None       # the models' non-embedding N: exponent a (as "a_N")
    profiles: list[Profile] = field(default_factory=list)   # approach 2
    points: dict = field(default_factory=dict)               # approach 1: C, N, D of the envelope
    rebuilt: bool = False
    notes: str = ""
    reason: str = ""                     # why N_opt / D_opt could not be fitted
    boot_a: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # a per resample

    @property
    def excluded(self) -> list[dict]:
        return [{"C": p.C, "status": p.status, "reason": p.reason}
                for p in self.profiles if not p.ok]

    def to_dict(self) -> dict:
        return {"method": self.method, "convention": self.convention, "rebuilt": self.rebuilt,
                "N_opt": self.N_opt.to_dict() if self.N_opt is not None else None,
                "D_opt": self.D_opt.to_dict() if self.D_opt is not None else None,
                "a": _param(self.N_opt, "a"), "a_interval": _interval(self.N_opt, "a"),
                "b": _param(self.D_opt, "b"), "b_interval": _interval(self.D_opt, "b"),
                "a_samples": [None if not np.isfinite(v) else float(v) for v in self.boot_a],
                "a_N": _param(self.N_model_opt, "a"),
                "a_N_interval": _interval(self.N_model_opt, "a"),
                "N_model_opt": self.N_model_opt.to_dict() if self.N_model_opt is not None else None,
                "profiles": [p.to_dict() for p in self.profiles],
                "excluded": self.excluded, "points": self.points, "notes": self.notes,
                "reason": self.reason}


def _param(f: Fit | None, k: str):
    v = None if f is None else f.params.get(k)
    return None if v is None or not np.isfinite(v) else float(v)


def _interval(f: Fit | None, k: str):
    if f is None or k not in f.intervals:
        return [None, None]
    return [None if not np.isfinite(v) else float(v) for v in f.intervals[k]]


def _power_theta(C: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    s, c = ols_rows(np.log(C)[None], np.log(Y)[None])
    return float(c[0]), float(s[0])


def _vertices(profs: list[Profile]) -> dict[str, np.ndarray]:
    ok = [p for p in profs if p.ok]
    return {"C": np.array([p.C for p in ok]), "N": np.array([p.N_opt for p in ok]),
            "D": np.array([p.D_opt for p in ok]), "M": np.array([p.N_model_opt for p in ok])}


def _residual_pool(profs: list[Profile]) -> np.ndarray:
    """Residuals of the parabolas with spare degrees of freedom, scaled by sqrt(n / (n - 3))."""
    out = []
    for p in profs:
        lo, hi = p.fit_range
        n = hi - lo
        if p.coef is not None and n > 3:
            out.append((p.loss[lo:hi] - p.fitted(p.N[lo:hi])) * math.sqrt(n / (n - 3)))
    return np.concatenate(out) if out else np.zeros(0)


def approach2(runs: IsoflopRuns, conventions: Sequence[str] | None = None, *,
              n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, ComputeOptimal]:
    """Approach 2 under each convention (default: every one in runs.C, the budget convention
    first): the profiles, N_opt and D_opt per budget with bootstrap intervals, and the fits
    N_opt = k C^a, D_opt = k C^b."""
    convs = list(conventions or runs.C)
    convs = [runs.budget_convention] + [c for c in convs if c != runs.budget_convention]
    base = {c: profiles(runs, c) for c in convs}

    # residual bootstrap at the run level, shared by every convention
    direct = base[runs.budget_convention]
    fitted = np.full(runs.loss.size, np.nan)
    size = runs.size(runs.budget_convention)
    for g, p in zip(np.unique(runs.budget), direct):
        m = runs.budget == g
        if p.coef is not None:  # the parabola where it was fitted, the loss itself elsewhere
            lo, hi = p.fit_range
            inside = (size[m] >= p.N[lo]) & (size[m] <= p.N[hi - 1])
            fitted[m] = np.where(inside, p.fitted(size[m]), runs.loss[m])
    fitted = np.where(np.isfinite(fitted), fitted, runs.loss)
    pool = _residual_pool(direct)
    draws = n_boot if pool.size else 0
    idx = np.random.default_rng(seed).integers(0, max(1, pool.size), size=(draws, runs.loss.size))
    boot_profiles = []
    for b in range(draws):
        lb = fitted + pool[idx[b]]
        if np.any(lb <= 0):
            lb = np.where(lb > 0, lb, runs.loss)
        r = runs.with_loss(lb)
        boot_profiles.append({c: profiles(r, c) for c in convs})

    out = {}
    for c in convs:
        out[c] = _approach2_fits(c, base[c], [bp[c] for bp in boot_profiles],
                                 rebuilt=c != runs.budget_convention, n_boot=draws)
    return out


def _approach2_fits(conv: str, profs: list[Profile], boot: list[list[Profile]], *,
                    rebuilt: bool, n_boot: int) -> ComputeOptimal:
    how = ("profiles rebuilt from the budgets' end-of-schedule losses, interpolated per size in "
           "ln C" if rebuilt else "measured IsoFLOP profiles")
    notes = (f"approach 2: parabola in ln N per budget, {how}; residual bootstrap "
             f"({n_boot} resamples)" if n_boot else
             f"approach 2: parabola in ln N per budget, {how}; no bootstrap (no residual degrees "
             f"of freedom, or none asked)")
    res = ComputeOptimal("approach2", conv, None, None, profiles=profs, rebuilt=rebuilt,
                         notes=notes)
    # per-budget intervals of N_opt: the same budget's vertex over the resamples
    for i, p in enumerate(profs):
        if p.ok and boot:
            v = np.array([bp[i].N_opt for bp in boot if bp[i].ok])
            if v.size >= 2:
                lo, hi = np.percentile(v, CI_PERCENTILES)
                p.N_opt_interval = (float(lo), float(hi))
    v = _vertices(profs)
    if v["C"].size < MIN_BUDGETS or np.unique(v["C"]).size < MIN_BUDGETS:
        res.reason = (f"{v['C'].size} budget(s) with a bracketed minimum; N_opt = k C^a needs "
                      f"{MIN_BUDGETS} or more")
        return res
    keys = ("N", "D", "M")
    boot_theta = {k: np.full((len(boot), 2), np.nan) for k in keys}
    for i, bp in enumerate(boot):
        bv = _vertices(bp)
        if np.unique(bv["C"]).size >= MIN_BUDGETS:
            for k in keys:
                boot_theta[k][i] = _power_theta(bv["C"], bv[k])
    res.boot_a = boot_theta["N"][:, 1].copy()
    fits = {}
    for key, law, exp_name in (("N", "N_opt", "a"), ("D", "D_opt", "b"), ("M", "N_opt", "a")):
        fits[key] = _power_fit(law, exp_name, v["C"], v[key], boot_theta[key], conv, notes)
    res.N_opt, res.D_opt, res.N_model_opt = fits["N"], fits["D"], fits["M"]
    return res


def _power_fit(law: str, exp_name: str, C: np.ndarray, Y: np.ndarray, boot: np.ndarray,
               conv: str, notes: str) -> Fit:
    """Y = k C^exp by least squares in log-log, with bootstrap draws of (log k, exp) given."""
    theta = np.array(_power_theta(C, Y))

    def to_params(th):
        s, k = th[..., 1], np.exp(th[..., 0])
        return {exp_name: s, "k": k, "k_pf_days": k * PF_DAY ** s}
    ly = np.log(Y)
    yhat = theta[0] + theta[1] * np.log(C)
    return make_fit(law, theta, boot, to_params, ly, yhat, conv, float(np.sum((ly - yhat) ** 2)),
                    notes)


def check_isoflop_table(runs: IsoflopRuns, profs: list[Profile]) -> None:
    """Refuse a table with a budget of fewer than 3 sizes (IsoflopError names the budgets)."""
    few = [p for p in profs if p.status == "few_sizes"]
    if few:
        raise IsoflopError("approach 2 needs at least 3 sizes per budget; " + "; ".join(
            f"budget C = {p.C:.4g} has {np.unique(p.N).size} (N = "
            f"{', '.join(f'{n:.4g}' for n in p.N)})" for p in few))


# --------------------------------------------------------------------------------------------
# Approach 1
# --------------------------------------------------------------------------------------------

def approach1(env: Envelope, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> ComputeOptimal:
    """N_opt and D_opt along a (not C_min-adjusted) envelope: the lowest run at each compute, its
    N_eff = C / (6 D) (and non-embedding N) and the tokens D it had seen there; the envelope's
    interior points only (not where the smallest or largest model is lowest)."""
    if env.cmin_adjusted:
        raise ValueError("approach 1 reads the envelope of C as counted, not C_min")
    u = env.interior
    C, N, M = env.C[u], env.N_eff[u], env.N[u]
    D = C / (KAPLAN_FLOPS_PER_PARAM_TOKEN * N)
    notes = ("approach 1: lowest run of the learning curves' envelope at each compute, points "
             "where the smallest or largest model is lowest left out; points of one curve "
             "bootstrapped as independent (optimistic intervals)")
    res = ComputeOptimal("approach1", env.convention, None, None, notes=notes,
                         points={"C": [float(x) for x in C], "N": [float(x) for x in N],
                                 "N_model": [float(x) for x in M], "D": [float(x) for x in D],
                                 "run": [str(r) for r in env.run[u]]})
    if np.unique(N).size < 2 or C.size < 3:
        res.reason = (f"the envelope has {np.unique(N).size} model size(s) lowest away from the "
                      f"ends of the sizes tried ({C.size} points); approach 1 needs 2 sizes and "
                      f"3 points")
        return res
    kw = {"n_boot": n_boot, "seed": seed, "convention": env.convention, "notes": notes}
    res.N_opt = fit_N_opt(C, N, **kw)
    res.D_opt = fit_D_opt(C, D, **kw)
    res.N_model_opt = fit_N_opt(C, M, **kw)
    return res


def exponent_difference(results: Mapping[str, ComputeOptimal], a: str, b: str) -> dict:
    """a(a) - a(b) with its paired bootstrap interval (approach 2 results of one call)."""
    ra, rb = results[a], results[b]
    if ra.N_opt is None or rb.N_opt is None:
        return {"difference": None, "interval": [None, None]}
    d = ra.N_opt.params["a"] - rb.N_opt.params["a"]
    diff = ra.boot_a - rb.boot_a if ra.boot_a.size == rb.boot_a.size else np.zeros(0)
    diff = diff[np.isfinite(diff)]
    if diff.size < 2:
        return {"difference": float(d), "interval": [None, None]}
    lo, hi = np.percentile(diff, CI_PERCENTILES)
    return {"difference": float(d), "interval": [float(lo), float(hi)]}
