"""Chinchilla's approaches 1 and 2: known exponents recovered from synthetic IsoFLOP data, profiles
rebuilt under other compute conventions, IsoFLOP plans whose schedules end at their budgets, and
clear errors for tables approach 2 cannot use."""

import csv
import json
import math
import re

import numpy as np
import pytest

from sixn.bench.cli import main
from sixn.model.flops import accounting, flops_per_token, param_counts
from sixn.scaling.compute_optimal import (IsoflopError, IsoflopRuns, approach2, budget_groups,
                                          check_isoflop_table, fit_profile)
from sixn.scaling.isoflop import IsoflopDesign, schedule_for_budget, step_flops
from sixn.scaling.isoflop_text import paragraph
from sixn.scaling.laws import chinchilla_loss
from sixn.scaling.plots import plot_sweep
from sixn.scaling.sweep import build_plan, isoflop_extensions, resolve_plan
from sixn.scaling.sweep_fits import fit_sweep
from sixn.scaling.synthetic import chinchilla_optimum, isoflop_table, synthetic_isoflop_sweep
from sixn.scaling.train import lr_at

BUDGETS = np.geomspace(1e18, 1e21, 5)
LAW_050 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.34}    # a = 0.5
LAW_073 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.12, "beta": 0.3244}  # a = 0.73


GRID = ["2x16", "2x24", "2x32", "2x48", "2x64", "3x80", "4x96"]


def _runs(conventions, k=7, vocab=2048, budgets=(3e11, 6.5e11, 1.4e12, 3e12)):
    """The resolved runs of an IsoFLOP design over GRID (a fixed design, not the CPU default)."""
    design = IsoflopDesign(budgets, k, conventions, min_steps=50)
    return resolve_plan(build_plan("cpu", sizes=GRID, isoflop=design, bpe_vocab=vocab), vocab, "cpu")


def _approach2(law, seed, n_sizes=7, noise=0.005, n_boot=200):
    t = isoflop_table(law, BUDGETS, n_sizes=n_sizes, noise=noise, seed=seed)
    runs = IsoflopRuns(t["N"], t["D"], t["loss"], {"6N": t["C"]}, "6N", sizes_from_compute=False)
    return approach2(runs, n_boot=n_boot, seed=seed)["6N"]


@pytest.mark.parametrize("law", [LAW_050, LAW_073], ids=["a=0.5", "a=0.73"])
def test_approach2_recovers_known_exponents_within_bootstrap_intervals(law):
    a_true = law["beta"] / (law["alpha"] + law["beta"])
    for seed in range(3):
        r = _approach2(law, seed)
        lo, hi = r.N_opt.intervals["a"]
        assert lo <= a_true <= hi, (seed, r.N_opt.params["a"], lo, hi)
        assert abs(r.N_opt.params["a"] - a_true) < 0.05
        blo, bhi = r.D_opt.intervals["b"]
        assert blo <= 1 - a_true <= bhi
        assert r.N_opt.n == len(BUDGETS) and r.N_opt.n_boot == 200 and not r.excluded
        # each budget's vertex against the law's exact optimum: close, and mostly inside its
        # own interval (the flat profiles of the largest budgets are the noisiest)
        n_true, _ = chinchilla_optimum(law, [p.C for p in r.profiles])
        inside = sum(p.N_opt_interval[0] <= n <= p.N_opt_interval[1]
                     for p, n in zip(r.profiles, n_true))
        assert inside >= 3
        for p, n in zip(r.profiles, n_true):
            assert abs(math.log(p.N_opt / n)) < 0.45
            assert p.D_opt == pytest.approx(p.C / (6 * p.N_opt), rel=1e-9)  # D = C / 6N


def test_chinchilla_and_kaplan_allocations_are_told_apart():
    r050, r073 = _approach2(LAW_050, 0), _approach2(LAW_073, 0)
    lo050, hi050 = r050.N_opt.intervals["a"]
    lo073, hi073 = r073.N_opt.intervals["a"]
    assert hi050 < lo073
    assert r050.N_opt.params["a"] < 0.55 < 0.68 < r073.N_opt.params["a"]


def test_profile_vertex_of_an_exact_parabola_and_its_refusals():
    N = np.geomspace(1e6, 1e9, 7)
    u = np.log(N) - math.log(3e7)
    p = fit_profile(1e20, N, 2.0 + 0.05 * u ** 2)
    assert p.ok and p.N_opt == pytest.approx(3e7, rel=1e-9) and p.loss_opt == pytest.approx(2.0)
    edge = fit_profile(1e20, N, 2.0 + 0.05 * (np.log(N) - math.log(1.2e6)) ** 2)
    assert edge.status == "edge" and "smallest size" in edge.reason
    down = fit_profile(1e20, N[:5], 2.0 - 0.01 * u[:5] ** 2 + 0.001 * u[:5])
    assert down.status in ("edge", "not_convex")
    few = fit_profile(1e20, N[:2], [2.1, 2.0])
    assert few.status == "few_sizes"
    assert list(budget_groups(np.array([1e18, 1.01e18, 5e18, 1e18, 5.05e18]))) == [0, 0, 1, 0, 1]


def test_profiles_rebuilt_under_another_convention_find_its_own_optimum():
    """Budgets in full-model FLOPs; the 6N and 6N + head optima come from profiles rebuilt per
    size, and match the law's optimum under that convention's own constraint."""
    law = {"E": 1.0, "A": 406.4, "B": 576.0, "alpha": 0.34, "beta": 0.28}
    runs = _runs(("full_model",))
    grid = sorted({(r.model.n_layer, r.model.d_model): r.model for r in runs}.values(),
                  key=lambda m: param_counts(m).nonembedding)
    N = np.array([param_counts(r.model).nonembedding for r in runs], float)
    D = np.array([r.train.steps * r.train.batch_tokens for r in runs], float)
    rng = np.random.default_rng(0)
    loss = chinchilla_loss(law, N, D) * np.exp(rng.normal(0, 0.002, N.size))
    C = {c: np.array([flops_per_token(r.model, c, 64) for r in runs]) * D
         for c in ("kaplan_6N", "kaplan_6N_head", "full_model")}
    res = approach2(IsoflopRuns(N, D, loss, C, "full_model"), n_boot=50)
    lN = np.log([param_counts(m).nonembedding for m in grid])
    checked = 0
    for conv in ("kaplan_6N", "kaplan_6N_head", "full_model"):
        lf = np.log([accounting(m, 64).training_per_token[conv] for m in grid])
        g = np.linspace(lN[0], lN[-1], 4000)
        f = np.exp(np.interp(g, lN, lf))
        assert res[conv].rebuilt == (conv != "full_model")
        for p in res[conv].profiles:
            if not p.ok:
                continue
            best = np.argmin(chinchilla_loss(law, np.exp(g), p.C / f))
            # a parabola through a wide, asymmetric profile: its vertex is close, not exact; and
            # the law's optimum between the grid's shapes is only known as closely as FLOPs per
            # token interpolate between them
            assert abs(math.log(p.N_model_opt) - g[best]) < 0.2, (conv, p.C)
            assert abs(math.log(p.N_opt) - math.log(f[best] / 6)) < 0.2   # N_eff = C / 6D
            checked += 1
    assert checked >= 8
    # counting the head makes small models dearer: N_eff grows more slowly with C than N
    full = res["full_model"]
    assert full.N_opt.params["a"] < full.N_model_opt.params["a"]
    assert full.N_opt.params["a"] + full.D_opt.params["b"] == pytest.approx(1.0, abs=1e-9)


def test_fit_sweep_on_an_isoflop_sweep(tmp_path):
    law = {"E": 1.0, "A": 406.4, "B": 576.0, "alpha": 0.34, "beta": 0.28}
    runs = _runs(("kaplan_6N", "full_model"), budgets=(1e11, 2.2e11, 4.6e11, 1e12))
    sweep = synthetic_isoflop_sweep(tmp_path / "s", runs, law=law, noise=0.002)
    res = fit_sweep(sweep, n_boot=30, chinchilla_polish=2)
    co = res["compute_optimal"]
    assert set(co["designs"]) == {"kaplan_6N", "full_model"}
    a_true = law["beta"] / (law["alpha"] + law["beta"])
    six = co["approach2"]["kaplan_6N"]
    assert not six["rebuilt"] and abs(six["a"] - a_true) < 0.03
    assert not co["approach2"]["full_model"]["rebuilt"]
    assert co["approach2"]["measured"]["rebuilt"]
    a1 = co["approach1"]["kaplan_6N"]
    assert abs(a1["a"] - a_true) < 0.06 and a1["a"] + a1["b"] == pytest.approx(1, abs=1e-9)
    d = co["differences"]["kaplan_6N - full_model"]
    assert d["difference"] == pytest.approx(six["a"] - co["approach2"]["full_model"]["a"])
    assert d["interval"][0] <= d["difference"] <= d["interval"][1]
    j = json.loads((sweep / "fits.json").read_text())
    prof = j["by_convention"]["kaplan_6N"]["approach2"]["profiles"]
    assert all(p["status"] == "ok" for p in prof) and len(prof) == 4
    assert j["published"]["chinchilla"]["approach2"]["a"] == 0.49
    assert sweep / "fig_isoflop.png" in plot_sweep(sweep, res)
    text = paragraph(sweep)   # the README's paragraph: figures read from the files
    assert f"| 6N | {six['a']:.3f} [{six['a_interval'][0]:.3f}, {six['a_interval'][1]:.3f}]" in text
    way = "lowers" if d["difference"] > 0 else "raises"
    assert f"Counting compute as the full-model count instead of 6N {way} a by" in text
    assert (sweep / "fig_isoflop.png").stat().st_size > 10_000
    rows = {(r["fit"], r["convention"], r["param"]) for r in csv.DictReader(
        open(sweep / "fits.csv"))}
    assert ("approach2 N_opt", "kaplan_6N", "a") in rows and ("approach1 D_opt", "measured", "b") in rows


def test_isoflop_plan_schedules_end_at_their_budgets():
    design = IsoflopDesign((3e11, 1e12), 4, ("kaplan_6N", "full_model", "measured"))
    plan = build_plan("cpu", isoflop=design, bpe_vocab=512)
    runs = resolve_plan(plan, 512, "cpu")
    assert len(runs) == 2 * 4 * 3 and {r.kind for r in runs} == {"isoflop"}
    assert len({r.name for r in runs}) == len(runs)
    for r in runs:
        per_step = step_flops(r.model, r.train, r.budget_convention)
        assert abs(r.train.steps * per_step - r.budget) <= 0.5 * per_step   # within half a step
        t = r.train
        assert t.warmup == min(100, t.steps // 10) and t.max_tokens == 0
        assert lr_at(t.steps - 1, t) == pytest.approx(t.lr * t.min_lr_ratio, rel=0.01)
        assert lr_at(t.warmup, t) == pytest.approx(t.lr)
    # the measured budget comes from the dispatch counter, not from model.flops
    m = [r for r in runs if r.budget_convention == "measured"][0]
    assert step_flops(m.model, m.train, "measured") != step_flops(m.model, m.train, "full_model")
    with pytest.raises(ValueError, match=r"only \d+ steps.*at least 150"):
        schedule_for_budget(runs[0].model, runs[0].train, 1e8, "kaplan_6N")
    with pytest.raises(ValueError, match="unknown budget convention palm"):
        IsoflopDesign(None, 5, ("palm",))
    with pytest.raises(ValueError, match="at least 3 sizes per budget"):
        IsoflopDesign(None, 2)


def test_extensions_add_the_next_size_past_an_edge(tmp_path):
    design = IsoflopDesign((3e11, 1e12), 3, ("full_model",))
    plan = build_plan("cpu", isoflop=design)
    runs = resolve_plan(plan, 256, "cpu")
    grid = [(m.n_layer, m.d_model) for m in plan.size_grid]
    rows, meta = [], []
    index = {b: [grid.index((r.model.n_layer, r.model.d_model)) for r in runs if r.budget == b]
             for b in (3e11, 1e12)}
    for r in runs:
        i = grid.index((r.model.n_layer, r.model.d_model))
        # the smaller budget is lowest at its largest size, the larger one in its middle
        loss = 3.0 - 0.1 * i if r.budget == 3e11 else 3.0 + 0.1 * (i - np.median(index[1e12])) ** 2
        rows.append({"run": r.name, "kind": "isoflop", "n_layer": r.model.n_layer,
                     "d_model": r.model.d_model, "n_head": r.model.n_head, "val_loss": loss})
        meta.append({"name": r.name, "kind": "isoflop", "budget": r.budget,
                     "budget_convention": r.budget_convention})
    from sixn.bench.results import write_csv, write_json
    write_csv(tmp_path / "summary.csv", rows)
    write_json(tmp_path / "sweep.json", {"plan": plan.to_dict(), "runs": meta})
    extra = isoflop_extensions(plan, tmp_path)
    assert len(extra) == 1 and extra[0].budget == 3e11
    assert grid.index((extra[0].model.n_layer, extra[0].model.d_model)) == max(index[3e11]) + 1
    assert "largest" in extra[0].label


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _run(capsys, *argv):
    rc = main(["fit", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_fit_cli_detects_isoflop_tables_and_prints_a_b_and_the_optima(tmp_path, capsys):
    t = isoflop_table(LAW_050, BUDGETS, n_sizes=7, noise=0.005, seed=0)
    table = _write(tmp_path / "iso.csv", ["C", "N", "loss"], zip(t["C"], t["N"], t["loss"]))
    rc, out, err = _run(capsys, table, "--json", "--bootstrap", "50")
    assert rc == 0, err
    j = json.loads(out)
    assert j["method"] == "isoflop" and len(j["budgets"]) == 5 and j["n"] == 35
    lo, hi = j["intervals"]["a"]
    assert lo <= 0.5 <= hi and j["a"] + j["b"] == pytest.approx(1.0, abs=1e-9)
    direct = _approach2(LAW_050, 0, n_boot=0)
    assert j["a"] == pytest.approx(direct.N_opt.params["a"], rel=1e-9)
    assert [b["N_opt"] for b in j["budgets"]] == pytest.approx([p.N_opt for p in direct.profiles])
    png = tmp_path / "iso-isoflop.png"
    assert j["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, out, _ = _run(capsys, table, "--bootstrap", "10", "--plot", tmp_path / "p.png")
    assert rc == 0 and "N_opt ~ C^a: a = " in out and "D_opt ~ C^b: b = " in out
    assert (tmp_path / "p.png").exists()
    # the same table forced through approach 3 still fits the Chinchilla form
    rc, out, _ = _run(capsys, table, "--json", "--bootstrap", "0", "--method", "chinchilla")
    assert rc == 0 and json.loads(out)["method"] == "chinchilla"


def test_fit_cli_leaves_out_a_budget_whose_minimum_is_at_an_edge(tmp_path, capsys):
    t = isoflop_table(LAW_050, BUDGETS[:4], n_sizes=5, noise=0.0, seed=0, jitter=0.0)
    C, N, L = t["C"].copy(), t["N"].copy(), t["loss"].copy()
    first = C == BUDGETS[0]
    L[first] = np.linspace(3.0, 2.0, first.sum())         # keeps falling: no minimum inside
    table = _write(tmp_path / "e.csv", ["C", "N", "loss"], zip(C, N, L))
    rc, out, err = _run(capsys, table, "--json", "--bootstrap", "0", "--no-plot")
    assert rc == 0, err
    j = json.loads(out)
    assert "left out" in err and f"{BUDGETS[0]:.4g}" in err and "largest size" in err
    assert len(j["excluded"]) == 1 and j["excluded"][0]["status"] == "edge"
    assert j["fits"]["N_opt"]["n"] == 3
    rc, out, err = _run(capsys, table, "--bootstrap", "0", "--strict", "--no-plot")
    assert rc == 2 and out == "" and "--strict" in err and f"{BUDGETS[0]:.4g}" in err


@pytest.mark.parametrize("rows, match", [
    ([[1e18, n, 3.0 - i / 10] for i, n in enumerate([1e7, 2e7])]
     + [[1e19, n, l] for n, l in ((1e7, 2.9), (3e7, 2.8), (9e7, 2.85))],
     r"at least 3 sizes per budget; budget C = 1e\+18 has 2 \(N = 1e\+07, 2e\+07\)"),
    ([[1e18, n, l] for n, l in ((1e7, 3.0), (2e7, 2.9), (4e7, 2.95))]
     + [[1e19, n, l] for n, l in ((1e7, 2.9), (3e7, 2.8), (9e7, 2.85))]
     + [[-1e19, 1e8, 2.8], [0, 2e8, 2.7]],
     r"column 'C' \(compute, flops\) must hold positive numbers.*data rows 7 \('-1e\+19'\), 8 "
     r"\('0'\)"),
    ([[1e18, n, l] for n, l in ((1e7, 3.0), (2e7, 2.9), (4e7, 2.8))]
     + [[1e19, n, l] for n, l in ((1e7, 2.9), (3e7, 2.8), (9e7, 2.7))],
     r"at least 2 budgets with a bracketed minimum; budget C = 1e\+18: lowest loss at the "
     r"largest size"),
])
def test_fit_cli_bad_isoflop_tables_exit_2(tmp_path, capsys, rows, match):
    table = _write(tmp_path / "bad.csv", ["C", "N", "loss"], rows)
    rc, out, err = _run(capsys, table, "--method", "isoflop", "--bootstrap", "0", "--no-plot")
    assert rc == 2 and out == "" and err.startswith("sixn fit: error: ")
    assert re.search(match, err), err


def test_fit_cli_isoflop_needs_a_compute_column(tmp_path, capsys):
    table = _write(tmp_path / "nd.csv", ["N", "D", "loss"],
                   [[1e6 * 2 ** i, 1e9, 3 - i / 10] for i in range(6)])
    rc, _, err = _run(capsys, table, "--method", "isoflop", "--no-plot")
    assert rc == 2 and "needs a compute column C" in err


def test_isoflop_runs_refuse_non_positive_values():
    with pytest.raises(IsoflopError, match="loss must be finite and > 0; bad values at rows 2"):
        IsoflopRuns(np.array([1.0, 2, 3]), np.array([1.0, 1, 1]), np.array([3.0, -1, 2]),
                    {"6N": np.array([6.0, 12, 18])}, "6N")
    runs = IsoflopRuns(np.array([1.0, 2, 3, 1, 2]), np.ones(5), np.full(5, 3.0),
                       {"6N": np.array([1e18, 1e18, 1e18, 1e19, 1e19])}, "6N",
                       sizes_from_compute=False)
    with pytest.raises(IsoflopError, match=r"budget C = 1e\+19 has 2"):
        check_isoflop_table(runs, approach2(runs, n_boot=0)["6N"].profiles)


def test_scale_isoflop_end_to_end(tmp_path, capsys):
    """A tiny IsoFLOP sweep through `sixn scale`: each run ends at its budget, the fits and the
    profile plot are written."""
    out = tmp_path / "iso"
    rc = main(["scale", "--isoflop", "--quick", "--sizes", "2x8", "2x12", "2x16",
               "--budgets", "6e9", "1.2e10", "--sizes-per-budget", "3", "--extend", "0",
               "--min-steps", "50",
               "--out", str(out), "--no-progress", "--json", "--no-fit"])
    assert rc == 0, capsys.readouterr().err
    j = json.loads(capsys.readouterr().out)
    assert len(j["runs"]) == 6 and all(r["state"] == "done" for r in j["runs"])
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["plan"]["isoflop"]["budget_conventions"] == ["full_model"]
    budget = {r["name"]: r["budget"] for r in meta["runs"]}
    for row in csv.DictReader(open(out / "summary.csv")):
        per_step = float(row["C_full_model"]) / float(row["steps"])
        assert abs(float(row["C_full_model"]) - budget[row["run"]]) <= 0.5 * per_step
    res = fit_sweep(out, n_boot=5, chinchilla_polish=2)
    assert res["compute_optimal"]["budget_conventions"] == ["full_model"]
    slot = res["by_convention"]["full_model"]
    prof = slot.get("approach2")
    prof = prof if hasattr(prof, "profiles") else slot["approach2_profiles"]
    assert len(prof.profiles) == 2 and all(p.N.size == 3 for p in prof.profiles)
    assert out / "fig_isoflop.png" in plot_sweep(out, res)
    rc = main(["scale", "--budgets", "1e12"])
    assert rc == 2 and "need --isoflop" in capsys.readouterr().err
    rc = main(["scale", "--isoflop", "--steps", "100", "--out", str(tmp_path / "x")])
    assert rc == 2 and "leave out --steps" in capsys.readouterr().err
