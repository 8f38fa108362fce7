"""`sixn fit TABLE.csv`: fitted constants with intervals, --json keys, exit codes and error messages."""

import json

import numpy as np
import pandas as pd
import pytest

from sixn.bench.cli import main
from sixn.model.flops import PF_DAY
from sixn.scaling.laws import LAWS

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _write(path, header, rows):
    pd.DataFrame([list(r) for r in rows], columns=header, dtype=object).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def points():
    N = np.repeat(np.geomspace(1e7, 1e10, 8), 8)
    D = np.tile(np.geomspace(1e9, 1e12, 8), 8)
    L = LAWS["chinchilla"].fn(CHINCHILLA, N, D) * np.exp(
        np.random.default_rng(0).normal(0, 0.01, N.size))
    return N, D, L


def _run(capsys, *argv):
    rc = main(["fit", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_has_the_chinchilla_constants_and_a(tmp_path, capsys, points):
    N, D, L = points
    table = _write(tmp_path / "t.csv", ["Params", "Tokens", "Loss"], zip(N, D, L))
    rc, out, err = _run(capsys, table, "--json", "--bootstrap", "30", "--seed", "1")
    assert rc == 0, err
    j = json.loads(out)
    for k in ("E", "A", "B", "alpha", "beta", "a"):
        assert isinstance(j[k], float), k
        lo, hi = j["intervals"][k]
        assert lo <= j[k] <= hi or k in ("A", "B", "E")  # percentile intervals of a skewed fit
    assert j["a"] == pytest.approx(j["beta"] / (j["alpha"] + j["beta"]))
    assert abs(j["alpha"] - 0.34) < 0.03 and abs(j["beta"] - 0.28) < 0.03
    assert abs(j["E"] - 1.69) < 0.1
    assert j["n"] == 64 and j["columns"] == {"N": "Params", "loss": "Loss", "D": "Tokens"}
    assert set(j["fits"]) == {"L_N", "chinchilla", "N_opt_empirical"}
    assert j["fits"]["chinchilla"]["n_boot"] == 30
    # C = 6 N D on this grid makes isoFLOP groups: the empirical exponent is close to the law's
    assert j["fits"]["N_opt_empirical"]["notes"] == "empirical (isoflop)"
    assert abs(j["a_empirical"] - j["a"]) < 0.05


def test_C_column_gives_D_by_6N_and_units(tmp_path, capsys, points):
    N, D, L = points
    by_d = _write(tmp_path / "d.csv", ["N", "D", "loss"], zip(N, D, L))
    by_c = _write(tmp_path / "c.csv", ["n", "C", "val_loss"], zip(N, 6 * N * D, L))
    by_pf = _write(tmp_path / "p.csv", ["N", "compute", "L"], zip(N, 6 * N * D / PF_DAY, L))
    res = []
    for table, extra in ((by_d, []), (by_c, []), (by_pf, ["--c-units", "pf-days"])):
        rc, out, err = _run(capsys, table, "--json", "--bootstrap", "0", *extra)
        assert rc == 0, err
        res.append(json.loads(out))
    for k in ("E", "A", "B", "alpha", "beta", "a"):
        assert res[1][k] == pytest.approx(res[0][k], rel=1e-6)
        assert res[2][k] == pytest.approx(res[0][k], rel=1e-6)


def test_text_output_lists_constants_with_intervals(tmp_path, capsys, points):
    N, D, L = points
    table = _write(tmp_path / "t.csv", ["N", "D", "loss"], zip(N, D, L))
    rc, out, _ = _run(capsys, table, "--bootstrap", "10")
    assert rc == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    for k in ("E", "A", "B", "alpha", "beta", "a", "alpha_N", "N_c"):
        assert k in lines and "[" in lines[k] and "]" in lines[k], k
    assert "N_opt ~ C^a with a = beta/(alpha+beta)" in out


def test_table_without_D_fits_L_N_only(tmp_path, capsys):
    N = np.geomspace(1e6, 1e9, 6)
    table = _write(tmp_path / "n.csv", ["N", "loss"], zip(N, (8.8e13 / N) ** 0.076))
    rc, out, err = _run(capsys, table, "--json", "--bootstrap", "20")
    assert rc == 0, err
    j = json.loads(out)
    assert j["E"] is None and j["a"] is None and set(j["fits"]) == {"L_N"}
    assert j["fits"]["L_N"]["params"]["alpha_N"] == pytest.approx(0.076, rel=1e-6)
    assert j["fits"]["L_N"]["params"]["N_c"] == pytest.approx(8.8e13, rel=1e-4)


@pytest.mark.parametrize("header, rows, match", [
    (["N", "tokens"], [[1e6, 1e9]] * 8, r"missing column\(s\) loss \(named loss / l / val_loss\).*found columns: N, tokens"),
    (["params", "L", "D"], [[1e6, 3.0, 1e9], [2e6, 2.9, 1e9], [-4e6, 2.8, 1e9], [8e6, 0, 2e9]],
     r"column 'params' \(parameters\) must hold positive numbers.*data rows 3 \('-4000000.0'\)"),
    (["N", "loss"], [[1e6, 3.0], [2e6, "nan"], [4e6, ""], [8e6, "abc"]],
     r"column 'loss'.*data rows 2 \('nan'\), 3 \(empty\), 4 \('abc'\)"),
    (["N", "loss"], [[1e6, 3.0], [2e6, 2.9], [2e6, 2.8]], r"too few points: L\(N\) needs at least 3 distinct N values, the table has 2"),
    (["N", "D", "loss"], [[1e6, 1e9, 3.0], [2e6, 1e9, 2.9], [4e6, 2e9, 2.8], [8e6, 2e9, 2.7]],
     r"too few points: the Chinchilla form needs at least 6 rows with D, the table has 4"),
    (["N", "D", "loss"], [[n, 1e9, 3.0 - i / 10] for i, n in enumerate([1e6, 2e6, 4e6, 8e6, 1e7, 2e7])],
     r"at least 2 distinct values of D"),
    (["N", "loss"], [], r"the table has no rows"),
])
def test_bad_tables_exit_2_with_clear_errors(tmp_path, capsys, header, rows, match):
    table = _write(tmp_path / "bad.csv", header, rows)
    rc, out, err = _run(capsys, table, "--bootstrap", "0")
    assert rc == 2 and out == ""
    assert err.startswith("sixn fit: error: ")
    import re
    assert re.search(match, err), err


def test_missing_file_and_bad_options(tmp_path, capsys):
    rc, _, err = _run(capsys, tmp_path / "nope.csv")
    assert rc == 2 and "nope.csv: no such file" in err
    table = _write(tmp_path / "n.csv", ["N", "loss"], [[1e6, 3], [2e6, 2.9], [4e6, 2.8]])
    rc, _, err = _run(capsys, table, "--bootstrap", "-1")
    assert rc == 2 and "argument --bootstrap: must be an integer >= 0" in err
    assert main(["fit", table, "--conv", "7N"]) == 2


def test_empirical_n_opt_isoflop_groups_and_frontier():
    from sixn.bench.commands.fit import empirical_n_opt
    # three budgets (within 2 % count as one), three sizes each: the lowest loss of each budget
    C = np.array([1e18, 1.01e18, 1e18, 1e19, 1e19, 1e19, 1e20, 1e20, 0.995e20])
    N = np.array([1e7, 2e7, 4e7, 2e7, 4e7, 8e7, 4e7, 8e7, 16e7])
    L = np.array([3.0, 2.9, 3.1, 2.8, 2.7, 2.75, 2.6, 2.5, 2.55])
    method, c, n = empirical_n_opt(C, N, L)
    assert method == "isoflop" and list(n) == [2e7, 4e7, 8e7]
    assert c[0] == pytest.approx((1e18 * 1e18 * 1.01e18) ** (1 / 3))
    # no budget groups: the points that no cheaper point beats
    method, c, n = empirical_n_opt(np.array([1.0, 2, 4, 8, 16]), np.array([1.0, 2, 3, 4, 5]),
                                   np.array([5.0, 4, 4.5, 3, 2]))
    assert method == "frontier" and list(c) == [1, 2, 8, 16] and list(n) == [1, 2, 4, 5]
