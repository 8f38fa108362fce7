"""Fits that would be silently wrong: each says so (stderr `warning:` and a `warnings` list in the
JSON), the Chinchilla form refuses a degenerate optimum, --bootstrap is capped, and diverged runs
are left out of a sweep's fits and listed."""

import json
import math

import numpy as np
import pytest

from sixn.bench.cli import main
from sixn.bench.results import write_json
from sixn.scaling.chinchilla import fit_chinchilla
from sixn.scaling.fitting import MAX_BOOTSTRAP, R2_WARN, assess
from sixn.scaling.kaplan import fit_L_N, fit_N_opt
from sixn.scaling.laws import chinchilla_loss
from sixn.scaling.sweep_fits import fit_sweep
from sixn.scaling.synthetic import SYNTHETIC_LAW, synthetic_sweep


def _table(tmp_path, header, rows, name="t.csv"):
    p = tmp_path / name
    p.write_text(",".join(header) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return str(p)


def _fit_json(capsys, *argv):
    rc = main(["fit", *argv, "--json"])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out else None, err


def _chinchilla_rows(law, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for N in (1e6, 3e6, 1e7, 3e7, 1e8):
        for D in (2e8, 1e9, 5e9):
            rows.append((N, D, float(chinchilla_loss(law, N, D)) * math.exp(rng.normal(0, noise))))
    return rows


def test_rising_loss_warns_with_a_negative_exponent(tmp_path, capsys):
    # loss rising with N: a perfect power law in the wrong direction (R^2 ~ 1)
    N = [1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    rc, res, err = _fit_json(capsys, _table(tmp_path, ["N", "loss"],
                                            [(n, 2.0 * (n / 1e4) ** 0.193) for n in N]))
    fit = res["fits"]["L_N"]
    assert rc == 0 and fit["params"]["alpha_N"] == pytest.approx(-0.193, rel=1e-6)
    assert fit["r2_log"] > 0.999   # the fit itself is excellent: only the warning tells
    assert any("alpha_N = -0.193 is not positive: the loss does not fall with N" in w
               for w in fit["warnings"])
    assert res["warnings"] == [f"L_N: {w}" for w in fit["warnings"]]
    assert "sixn fit: warning: L_N: alpha_N = -0.193 is not positive" in err


def test_a_falling_power_law_has_no_warnings(tmp_path, capsys):
    N = [1e4, 1e5, 1e6, 1e7, 1e8, 1e9]
    rc, res, err = _fit_json(capsys, _table(tmp_path, ["N", "loss"],
                                            [(n, 5.0 * (n / 1e4) ** -0.076) for n in N]))
    assert rc == 0 and res["warnings"] == [] and res["fits"]["L_N"]["warnings"] == []
    assert "warning" not in err


def test_chinchilla_refuses_a_degenerate_optimum(tmp_path, capsys):
    # loss rising with N and D: the optimiser ends at alpha = beta = 0, a = 0/0
    rows = [(N, D, 2.0 + 1e-8 * N + 1e-10 * D) for N in (1e6, 3e6, 1e7, 3e7)
            for D in (2e8, 1e9, 5e9)]
    with pytest.raises(ValueError, match=r"degenerate optimum \(alpha = 0, beta = 0"):
        fit_chinchilla(*map(np.array, zip(*rows)), n_boot=0, n_polish=4)
    rc, res, err = _fit_json(capsys, _table(tmp_path, ["N", "D", "loss"], rows),
                             "--bootstrap", "0")
    assert rc == 0 and res["fits"]["chinchilla"]["skipped"] is True
    assert res["a"] is None and res["alpha"] is None
    assert any(w.startswith("chinchilla: refused: fit_chinchilla: degenerate optimum")
               for w in res["warnings"])
    assert "sixn fit: warning: chinchilla: refused" in err


def test_a_healthy_chinchilla_table_is_fitted_without_warnings():
    N, D, L = map(np.array, zip(*_chinchilla_rows(SYNTHETIC_LAW, noise=0.003)))
    f = fit_chinchilla(N, D, L, n_boot=0, n_polish=8)
    assert f.params["alpha"] == pytest.approx(SYNTHETIC_LAW["alpha"], abs=0.05)
    assert f.warnings == []


def test_too_few_degrees_of_freedom_warns(capsys, tmp_path):
    # 3 points, 2 parameters: 1 degree of freedom, however narrow the bootstrap makes it look
    rc, res, _ = _fit_json(capsys, _table(tmp_path, ["N", "loss"],
                                          [(1e4, 4.0), (1e5, 3.5), (1e6, 3.1)]))
    assert any("only 1 degree(s) of freedom (3 points, 2 parameters)" in w
               for w in res["fits"]["L_N"]["warnings"])
    f = fit_L_N(np.geomspace(1e4, 1e9, 8), 5.0 * np.geomspace(1e4, 1e9, 8) ** -0.076, n_boot=0)
    assert not any("degree" in w for w in f.warnings)


def test_low_r2_warns():
    rng = np.random.default_rng(0)
    N = np.geomspace(1e4, 1e6, 12)
    L = 4.0 * N ** -0.01 * np.exp(rng.normal(0, 0.05, N.size))   # noise far above the trend
    f = fit_L_N(N, L, n_boot=0)
    assert f.r2_log < R2_WARN and any(f"R^2 (log) = {f.r2_log:.3f} is below" in w for w in f.warnings)


@pytest.mark.parametrize("law, params, match", [
    ("L_N", {"alpha_N": 2.5}, "implausibly large"),
    ("N_opt", {"a": -0.2}, "compute-optimal N does not grow with compute"),
    ("N_opt", {"a": 1.4}, "implausibly large"),
    ("B_crit", {"alpha_B": -1.0}, "critical batch does not grow as the loss falls"),
    ("L_D", {"alpha_D": math.nan}, "is not a number"),
])
def test_exponent_checks(law, params, match):
    assert any(match in w for w in assess(law, params, 20, 0.99))
    assert not assess("N_opt", {"a": 0.5}, 20, 0.99)


def test_bootstrap_is_capped_with_a_message(tmp_path, capsys):
    N = np.geomspace(1e4, 1e9, 6)
    rc, res, err = _fit_json(capsys, _table(tmp_path, ["N", "loss"], zip(N, 5.0 * N ** -0.076)),
                             "--bootstrap", "100000000")
    assert rc == 0 and res["bootstrap"] == MAX_BOOTSTRAP
    assert f"sixn fit: warning: --bootstrap 100000000 capped at {MAX_BOOTSTRAP}" in err
    assert res["fits"]["L_N"]["n_boot"] >= 0.99 * MAX_BOOTSTRAP   # resamples that converged


def test_fit_of_a_folder_says_so(tmp_path, capsys):
    assert main(["fit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder; give a file" in err and "no such file" not in err


# --- sweeps ----------------------------------------------------------------------------------

def test_diverged_runs_are_left_out_of_a_sweeps_fits_and_listed(tmp_path):
    ref = fit_sweep(synthetic_sweep(tmp_path / "ref", kinds=("ladder",), n_eval=10), n_boot=0,
                    chinchilla_polish=2, write=False)
    sweep = synthetic_sweep(tmp_path / "s", kinds=("ladder",), n_eval=10)
    # a run whose curve blew up: partial rows in curves.csv, a diverged.json in its folder
    bad = "ladder-L9-d999"
    curves = (sweep / "curves.csv").read_text().splitlines()
    head = curves[0].split(",")
    row = curves[1].split(",")
    row[head.index("run")] = bad
    row[head.index("val_loss")] = "2426.0"
    row[head.index("b_simple")] = "1e9"
    (sweep / "curves.csv").write_text("\n".join(curves + [",".join(row)]) + "\n")
    write_json(sweep / "runs" / bad / "diverged.json",
               {"run": bad, "step": 7, "loss": "nan", "message": "diverged", "reason": "non_finite_loss"})
    res = fit_sweep(sweep, n_boot=0, chinchilla_polish=2, write=True)
    assert res["excluded_runs"] == [{"run": bad, "reason": "non_finite_loss", "step": 7,
                                     "message": "diverged"}]
    assert res["warnings"][0] == (f"run {bad} left out of the fits: it diverged "
                                  f"(non_finite_loss at step 7)")
    # the fits are those of the sweep without it (its partial curve fed B_crit before)
    assert res["independent"]["B_crit"].params == ref["independent"]["B_crit"].params
    assert res["by_convention"]["kaplan_6N"]["L_N"].params == \
        ref["by_convention"]["kaplan_6N"]["L_N"].params
    written = json.loads((sweep / "fits.json").read_text())
    assert written["excluded_runs"][0]["run"] == bad and written["warnings"] == res["warnings"]


def test_sweep_fit_warnings_are_collected(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", kinds=("ladder",), n_eval=10,
                            ladder=((2, 32), (2, 64), (4, 64)))
    res = fit_sweep(sweep, n_boot=0, chinchilla_polish=2, write=False)
    f = res["by_convention"]["kaplan_6N"]["L_N"]
    assert f.n == 3 and any("degree(s) of freedom" in w for w in f.warnings)
    assert any(w.startswith("L_N (kaplan_6N): only 1 degree(s) of freedom") for w in res["warnings"])
    nopt = fit_N_opt(np.geomspace(1e15, 1e18, 5), np.geomspace(1e8, 1e6, 5), n_boot=0)
    assert any("does not grow with compute" in w for w in nopt.warnings)


def test_a_loss_that_rises_somewhere_is_named():
    N = np.array([1e4, 1e5, 1e6, 1e7, 1e8, 1e9])
    L = 5.0 * N ** -0.076
    L[4] = L[3] * 1.05                # one size trained worse than the one below it
    f = fit_L_N(N, L, n_boot=0)
    assert f.params["alpha_N"] > 0    # the exponent alone would not tell
    assert any(w.startswith("the loss rises with N at 1 of 5 steps (N = 1e+07 -> 1e+08") for w in f.warnings)
    assert not any("rises" in w for w in fit_L_N(N, 5.0 * N ** -0.076, n_boot=0).warnings)


def test_the_report_lists_the_fit_warnings(tmp_path):
    from sixn.bench.report_md import write_report
    from sixn.bench.results import provenance
    folder = tmp_path / "rep"
    write_json(folder / "scaling" / "fits.json", {
        "conventions": [], "by_convention": {}, "skipped": [],
        "warnings": ["L_N (kaplan_6N): alpha_N = -0.193 is not positive: the loss does not fall"]})
    text = write_report(folder, {"device": "cpu", "quick": True}, provenance("cpu"),
                        ("scaling",)).read_text()
    assert "- L_N (kaplan_6N): alpha_N = -0.193 is not positive: the loss does not fall" in text
    figures = json.loads((folder / "figures.json").read_text())["figures"]
    assert {"file": "scaling/fits.json", "path": ["warnings", 0]}.items() <= next(
        f for f in figures if f.get("path") == ["warnings", 0]).items()
