"""Scaling-law fits recover known constants from noisy synthetic data, and fail clearly on bad input."""

import json
import math

import numpy as np
import pytest

from sixn.model.flops import PF_DAY, params_from_compute
from sixn.scaling.chinchilla import chinchilla_objective, fit_chinchilla, objective_and_gradient
from sixn.scaling.envelope import cmin_envelope
from sixn.scaling.fitting import huber
from sixn.scaling.kaplan import fit_B_crit, fit_L_Cmin, fit_L_D, fit_L_N, fit_L_ND, fit_L_NS, fit_N_opt
from sixn.scaling.laws import Fit, LAWS, c_min, chinchilla_N_opt, s_min
from sixn.scaling.sweep_fits import fit_sweep
from sixn.scaling.synthetic import SYNTHETIC_B_CRIT, SYNTHETIC_LAW, synthetic_sweep
from sixn.scaling.tables import read_table

KAPLAN_ND = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13}
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _noisy(y, sigma, seed):
    return y * np.exp(np.random.default_rng(seed).normal(0.0, sigma, np.shape(y)))


def _assert_within(fit, truth, rel=None):
    for k, v in truth.items():
        lo, hi = fit.intervals[k]
        assert lo <= v <= hi, f"{k}: true {v} outside the bootstrap interval [{lo}, {hi}] ({fit.describe()})"
        if rel is not None:
            assert abs(fit.params[k] / v - 1) < rel, f"{k}: {fit.params[k]} vs {v}"


def test_kaplan_L_ND_recovers_constants_within_bootstrap_intervals():
    N = np.repeat(np.geomspace(1e6, 1e9, 8), 8)
    D = np.tile(np.geomspace(3e7, 3e10, 8), 8)
    L = _noisy(LAWS["L_ND"].fn(KAPLAN_ND, N, D), 0.01, seed=1)
    fit = fit_L_ND(N, D, L, n_boot=100, seed=0)
    _assert_within(fit, KAPLAN_ND)
    # the exponents are pinned down, not just covered by a huge interval
    for k in ("alpha_N", "alpha_D"):
        lo, hi = fit.intervals[k]
        assert hi - lo < 0.15 * KAPLAN_ND[k]
        assert abs(fit.params[k] / KAPLAN_ND[k] - 1) < 0.06
    assert fit.r2_log > 0.99 and fit.n == 64 and fit.n_boot >= 95


def test_chinchilla_approach3_recovers_constants_within_bootstrap_intervals():
    N = np.repeat(np.geomspace(1e7, 1e10, 8), 8)
    D = np.tile(np.geomspace(1e9, 1e12, 8), 8)
    L = _noisy(LAWS["chinchilla"].fn(CHINCHILLA, N, D), 0.01, seed=0)
    fit = fit_chinchilla(N, D, L, n_polish=16, n_boot=100, seed=0)
    truth_a = CHINCHILLA["beta"] / (CHINCHILLA["alpha"] + CHINCHILLA["beta"])
    _assert_within(fit, {**CHINCHILLA, "a": truth_a})
    assert abs(fit.params["alpha"] - 0.34) < 0.03 and abs(fit.params["beta"] - 0.28) < 0.03
    assert fit.intervals["alpha"][1] - fit.intervals["alpha"][0] < 0.1
    p = fit.params
    assert p["a"] == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]))
    assert p["G"] == pytest.approx((p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"])))
    # the optimiser did not stop early: its objective is no worse than at the true constants
    lN, lD, lL = np.log(N), np.log(D), np.log(L)
    truth = np.log([CHINCHILLA["E"], CHINCHILLA["A"], CHINCHILLA["B"]]).tolist() + [0.34, 0.28]
    assert fit.objective <= chinchilla_objective(np.array(truth), lN, lD, lL) + 1e-12
    # N_opt = G (C/6)^a minimises the fitted law along C = 6 N D
    C = 1e21
    Ns = np.geomspace(1e8, 1e11, 4001)
    best = Ns[np.argmin(fit.predict(N=Ns, D=C / (6 * Ns)))]
    assert chinchilla_N_opt(fit, C) == pytest.approx(best, rel=0.01)


def test_huber_and_chinchilla_gradient():
    r = np.array([-0.01, -5e-4, 0.0, 5e-4, 0.01])
    h = huber(r, 1e-3)
    assert h[1] == pytest.approx(0.5 * 5e-4 ** 2) and h[2] == 0
    assert h[4] == pytest.approx(1e-3 * (0.01 - 0.5e-3))
    rng = np.random.default_rng(3)
    lN, lD = np.log(rng.uniform(1e7, 1e10, 30)), np.log(rng.uniform(1e9, 1e12, 30))
    lL = np.log(rng.uniform(2.0, 4.0, 30))
    th = np.array([0.4, 6.0, 6.5, 0.35, 0.3])
    f, g = objective_and_gradient(th, lN, lD, lL, 0.05)
    eps = 1e-6
    num = [(objective_and_gradient(th + eps * e, lN, lD, lL, 0.05)[0]
            - objective_and_gradient(th - eps * e, lN, lD, lL, 0.05)[0]) / (2 * eps) for e in np.eye(5)]
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)
    assert f == pytest.approx(chinchilla_objective(th, lN, lD, lL, 0.05))


def test_L_N_power_law_recovery_with_and_without_E():
    N = np.geomspace(1e5, 1e9, 12)
    L = _noisy((8.8e13 / N) ** 0.076, 0.005, seed=2)
    fit = fit_L_N(N, L, n_boot=200, seed=1)
    _assert_within(fit, {"alpha_N": 0.076, "N_c": 8.8e13})
    assert abs(fit.params["alpha_N"] - 0.076) < 0.005
    LE = _noisy(1.5 + (3e6 / N) ** 0.35, 0.003, seed=3)
    fe = fit_L_N(N, LE, with_E=True, n_boot=100, seed=1)
    _assert_within(fe, {"E": 1.5, "alpha_N": 0.35, "N_c": 3e6})
    assert fe.predict(N=1e7) == pytest.approx(1.5 + 0.3 ** 0.35, rel=0.01)
    lo, hi = fe.band(N=np.array([1e6, 1e8]))
    assert np.all(lo <= hi) and lo.shape == (2,)


def test_L_D_L_Cmin_B_crit_and_N_opt_power_laws():
    D = np.geomspace(1e7, 1e10, 10)
    _assert_within(fit_L_D(D, _noisy((5.4e13 / D) ** 0.095, 0.005, 4), n_boot=200),
                   {"alpha_D": 0.095, "D_c": 5.4e13})
    C = np.geomspace(1e-6, 1e2, 12) * PF_DAY
    fc = fit_L_Cmin(C, _noisy((3.1e8 * PF_DAY / C) ** 0.05, 0.003, 5), n_boot=200)
    _assert_within(fc, {"alpha_C": 0.05, "C_c_pf_days": 3.1e8})
    L = np.linspace(2.0, 6.0, 15)
    fb = fit_B_crit(_noisy(2e8 / L ** (1 / 0.21), 0.05, 6), L, n_boot=200)
    _assert_within(fb, {"alpha_B": 0.21, "B_star": 2e8}, rel=0.1)
    assert fb.predict(L=3.0) == pytest.approx(fb.params["B_star"] / 3.0 ** (1 / fb.params["alpha_B"]))
    Cn = np.geomspace(1e17, 1e23, 14)
    fn = fit_N_opt(Cn, _noisy(0.05 * Cn ** 0.73, 0.05, 7), n_boot=200)
    _assert_within(fn, {"a": 0.73, "k": 0.05})
    assert fn.params["k_pf_days"] == pytest.approx(fn.params["k"] * PF_DAY ** fn.params["a"])


def test_L_NS_with_S_min_from_B_crit():
    bc = fit_B_crit(2e5 / np.linspace(2, 5, 5) ** (1 / 0.21), np.linspace(2, 5, 5), n_boot=0)
    truth = {"alpha_N": 0.077, "alpha_S": 0.76, "N_c": 6.5e13, "S_c": 2.1e3}
    N = np.repeat(np.geomspace(1e5, 1e8, 6), 8)
    Smin = np.tile(np.geomspace(3e2, 3e4, 8), 6)
    L = LAWS["L_NS"].fn(truth, N, Smin)
    B = np.full_like(L, 5e5)
    S = Smin * (1 + bc.predict(L=L) / B)  # eq. 5.4 inverted: the steps actually taken
    assert np.allclose(s_min(S, B, bc.predict(L=L)), Smin)
    fit = fit_L_NS(N, S, B, _noisy(L, 0.003, 8), bc, n_boot=100)
    _assert_within(fit, truth)
    with pytest.raises(ValueError, match="B_crit fit"):
        fit_L_NS(N, S, B, L, None)


def _curves(law, sizes, one_layer=None):
    run, n_layer, N_, tok, loss, C = [], [], [], [], [], []
    for i, N in enumerate(sizes):
        D = np.geomspace(1e6, 1e11, 60)
        run += [f"r{i}"] * D.size
        n_layer += [1 if (one_layer is not None and i == one_layer) else 4] * D.size
        N_ += [N] * D.size
        tok += list(D)
        loss += list(LAWS["chinchilla"].fn(law, N, D) * (0.5 if i == one_layer else 1.0))
        C += list(6 * N * D)
    return {"run": np.array(run, dtype=object), "n_layer": np.array(n_layer, float),
            "N": np.array(N_, float), "tokens": np.array(tok), "val_loss": np.array(loss),
            "C_kaplan_6N": np.array(C), "batch_tokens": np.full(len(C), 1e5)}


def test_cmin_envelope_on_synthetic_learning_curves():
    sizes = np.geomspace(1e6, 1e9, 16)
    curves = _curves(CHINCHILLA, sizes)
    env = cmin_envelope(curves, "kaplan_6N", n_grid=80)
    u = env.usable
    assert u.sum() > 40 and env.C.size == 80
    # the envelope is the lowest curve at every compute, to within log-log interpolation
    for C, L, run in zip(env.C[u], env.loss[u], env.run[u]):
        D = C / (6 * sizes)
        inside = (D >= 1e6) & (D <= 1e11)
        exact = LAWS["chinchilla"].fn(CHINCHILLA, sizes[inside], D[inside])
        assert L == pytest.approx(exact.min(), rel=2e-3)
        assert run == f"r{np.flatnonzero(inside)[np.argmin(exact)]}"
    # the compute-optimal exponent of the law comes back from the envelope
    i = env.interior
    fit = fit_N_opt(env.C[i], env.N_eff[i], n_boot=50)
    assert abs(fit.params["a"] - 0.28 / 0.62) < 0.02
    # one-layer models are kept out even when they would be lowest
    c1 = _curves(CHINCHILLA, sizes, one_layer=3)
    e1 = cmin_envelope(c1, "kaplan_6N")
    assert e1.excluded == ["r3"] and "r3" not in e1.runs and "r3" not in set(e1.run)
    # with a B_crit law, compute becomes C_min = C / (1 + B / B_crit(L)) (eq. 5.5)
    bc = fit_B_crit(np.array([3e5, 1e5, 4e4]), np.array([2.0, 3.0, 4.0]), n_boot=0)
    ec = cmin_envelope(curves, "kaplan_6N", bc)
    assert ec.cmin_adjusted and ec.C.max() < env.C.max()
    one = curves["run"] == "r0"
    cm = c_min(curves["C_kaplan_6N"][one], 1e5, bc.predict(L=curves["val_loss"][one]))
    assert ec.C.min() == pytest.approx(cm.min())
    with pytest.raises(ValueError, match="at least 2 runs"):
        cmin_envelope({k: v[one] for k, v in curves.items()}, "kaplan_6N")
    with pytest.raises(ValueError, match="unknown convention"):
        cmin_envelope(curves, "7N")


@pytest.mark.parametrize("call, match", [
    (lambda: fit_L_N([1e6, 2e6, -1.0], [3.0, 2.9, 2.8]), r"N must be finite and > 0.*index 2"),
    (lambda: fit_L_N([1e6, 2e6, 4e6], [3.0, float("nan"), 2.8]), r"L must be finite.*index 1"),
    (lambda: fit_L_N([1e6, 2e6], [3.0, 2.9]), r"at least 3 points, got 2"),
    (lambda: fit_L_N([1e6] * 4, [3.0, 2.9, 2.8, 2.7]), r"2 distinct values of N"),
    (lambda: fit_L_N([1e6, 2e6, 4e6], [3.0, 2.9]), r"differ in length"),
    (lambda: fit_chinchilla([1e6] * 5, [1e9] * 5, [3.0] * 5), r"at least 6 points, got 5"),
    (lambda: fit_L_ND([1e6, 2e6, 4e6, 8e6, 1e7], [1e9] * 5, [3.0] * 5), r"distinct values of D"),
    (lambda: fit_B_crit([1e5, 0.0, 1e4], [2.0, 3.0, 4.0]), r"b_simple must be finite and > 0"),
])
def test_bad_inputs_give_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fit_sweep_all_conventions_side_by_side(tmp_path):
    sweep = synthetic_sweep(tmp_path / "sweep", seed=0)
    res = fit_sweep(sweep, n_boot=10, chinchilla_polish=2)
    assert res["conventions"] == ["kaplan_6N", "kaplan_6N_head", "kaplan_6N_context", "full_model",
                                  "measured"]
    # a ladder sweep has no IsoFLOP runs: approach 2 is the only fit left out, and says why
    assert {s["fit"] for s in res["skipped"]} == {"approach2"}
    assert all("no IsoFLOP runs" in s["reason"] for s in res["skipped"])
    for name in ("B_crit", "L_D", "L_NS"):
        assert isinstance(res["independent"][name], Fit)
    bc = res["independent"]["B_crit"].params
    assert abs(bc["alpha_B"] - SYNTHETIC_B_CRIT["alpha_B"]) < 0.01
    for conv in res["conventions"]:
        for name in ("L_N", "L_ND", "chinchilla", "L_Cmin", "N_opt"):
            assert isinstance(res["by_convention"][conv][name], Fit), (conv, name)
            assert res["by_convention"][conv][name].convention == conv
    # under 6N, N = C / 6D is Kaplan's non-embedding N itself
    s = read_table(sweep / "summary.csv")
    lad = (s["kind"] == "ladder") & (s["n_layer"] > 1)
    direct = fit_L_N(s["N"][lad], s["best_val_loss"][lad], n_boot=0)
    assert res["by_convention"]["kaplan_6N"]["L_N"].params["alpha_N"] == pytest.approx(
        direct.params["alpha_N"], rel=1e-9)
    assert np.all(params_from_compute(s["C_full_model"], s["D"]) > s["N"])
    # the counting shows: full-model compute moves the fitted constants
    a6 = res["by_convention"]["kaplan_6N"]["chinchilla"].params["alpha"]
    af = res["by_convention"]["full_model"]["chinchilla"].params["alpha"]
    assert abs(a6 - SYNTHETIC_LAW["alpha"]) < 0.04 and abs(af - a6) > 0.01
    # Kaplan's D of a data-limited run is its dataset size, not the tokens it saw (2 epochs here)
    d = (s["kind"] == "data") & (s["N"] == s["N"][s["kind"] == "data"].max())
    assert s["D"][d] == pytest.approx(2 * s["data_tokens"][d], rel=0.01)
    ld = fit_L_D(s["data_tokens"][d], s["best_val_loss"][d], n_boot=0)
    assert res["independent"]["L_D"].params == pytest.approx(ld.params, rel=1e-12)
    j = json.loads((sweep / "fits.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"fits.json holds {c}: not valid JSON"))
    assert j["published"]["kaplan"]["L_ND"]["alpha_D"] == 0.103 and "provenance" in j
    assert j["by_convention"]["measured"]["chinchilla"]["params"]["alpha"] > 0
    rows = read_table(sweep / "fits.csv")
    k = (rows["fit"] == "L_N") & (rows["param"] == "alpha_N")
    assert set(rows["convention"][k]) == set(res["conventions"])
    assert np.all(rows["published"][k] == 0.076)


def test_fit_sweep_reports_what_it_skips(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", kinds=("ladder",), measured=False, n_eval=10)
    res = fit_sweep(sweep, n_boot=5, chinchilla_polish=2, write=False)
    assert res["conventions"] == ["kaplan_6N", "kaplan_6N_head", "kaplan_6N_context", "full_model"]
    reasons = {(s["fit"], s["convention"]): s["reason"] for s in res["skipped"]}
    assert "kind 'data'" in reasons[("L_D", None)]
    assert "distinct values of D" in reasons[("chinchilla", "kaplan_6N")]
    assert res["by_convention"]["full_model"]["chinchilla"]["skipped"] is True
    assert not (sweep / "fits.json").exists()
    with pytest.raises(ValueError, match="neither curves.csv nor summary.csv"):
        fit_sweep(tmp_path / "empty")


def test_envelope_leaves_out_points_a_cheaper_point_beats():
    # run a stops at C = 10 with loss 3; b only gets below 3 at C = 2 * 50^(ln 0.6 / ln 0.5) ~ 35.9
    runs = {"a": ([1.0, 10.0], [4.0, 3.0]), "b": ([2.0, 100.0], [5.0, 2.5]),
            "c": ([3.0, 1000.0], [6.0, 2.8])}
    t = {"run": [], "val_loss": [], "C_kaplan_6N": [], "tokens": [], "n_layer": [], "N": []}
    for i, (r, (C, L)) in enumerate(runs.items()):
        for c, l in zip(C, L):
            t["run"].append(r), t["val_loss"].append(l), t["C_kaplan_6N"].append(c)
            t["tokens"].append(c / (6 * 10.0 ** i)), t["n_layer"].append(2), t["N"].append(10.0 ** i)
    t = {k: np.array(v, dtype=object if k == "run" else float) for k, v in t.items()}
    env = cmin_envelope(t, "kaplan_6N", n_grid=200)
    cross = 2 * 50 ** (math.log(0.6) / math.log(0.5))
    teeth = (env.C > 10.0 * 1.001) & (env.C < cross * 0.999)
    assert teeth.sum() > 5 and np.all(env.dominated[teeth]) and not env.usable[teeth].any()
    assert np.all(env.coverage[teeth] >= 2)
    u = env.usable
    assert np.all(np.diff(env.loss[u]) <= 1e-12)
    assert set(env.run[u]) == {"a", "b"}
