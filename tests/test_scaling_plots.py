"""Scaling plots are drawn from a synthetic sweep in the tables' schema."""

import pytest

from sixn.scaling.sweep_fits import fit_sweep
from sixn.scaling.synthetic import synthetic_sweep
from sixn.scaling import plots as P

ALL = ["fig_learning_curves.png", "fig_loss_vs_N.png", "fig_loss_vs_D.png", "fig_nopt_vs_C.png",
       "fig_shape.png", "fig_sample_efficiency.png", "fig_transfer.png"]


def _check_pngs(paths, names, folder):
    assert [p.name for p in paths] == names
    for p in paths:
        assert p.parent == folder and p.is_file()
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p


def test_plot_sweep_writes_every_figure(tmp_path):
    sweep = synthetic_sweep(tmp_path / "sweep", seed=1, n_eval=16)
    res = fit_sweep(sweep, n_boot=10, chinchilla_polish=2, write=False)
    assert P.panel_conventions(res) == [("kaplan_6N", "6N compute (Kaplan)"),
                                        ("measured", "measured compute")]
    paths = P.plot_sweep(sweep, res)
    _check_pngs(paths, ALL, sweep)
    assert not list(sweep.glob(".*.png"))  # no temporary files left behind


def test_figures_drawn_in_two_processes_are_those_of_one(tmp_path, monkeypatch):
    """processes=2 forks the drawing: the same figures, pixel for pixel, and the same order."""
    monkeypatch.setattr(P, "provenance", lambda: {"git_commit": "0" * 40, "date": "fixed"})
    sweep = synthetic_sweep(tmp_path / "sweep", seed=2, n_eval=8)
    res = fit_sweep(sweep, n_boot=5, chinchilla_polish=2, write=False)
    one = {p.name: p.read_bytes() for p in P.plot_sweep(sweep, res)}
    two = P.plot_sweep(sweep, res, processes=2)
    assert [p.name for p in two] == list(one) == ALL
    assert {p.name: p.read_bytes() for p in two} == one


def test_plot_sweep_without_measured_compute_or_experiments(tmp_path):
    sweep = synthetic_sweep(tmp_path / "s", kinds=("ladder", "data"), measured=False, n_eval=10)
    paths = P.plot_sweep(sweep, n_boot=5, chinchilla_polish=2)  # fits recomputed, not written
    _check_pngs(paths, [n for n in ALL if n != "fig_shape.png"], sweep)
    assert not (sweep / "fits.json").exists()
    res = {"conventions": ["kaplan_6N", "kaplan_6N_context", "full_model"]}
    assert P.panel_conventions(res)[1][0] == "full_model"
    assert "no measured compute" in P.panel_conventions(res)[1][1]


def test_plot_sweep_needs_tables(tmp_path):
    with pytest.raises(ValueError, match="neither curves.csv nor summary.csv"):
        P.plot_sweep(tmp_path)
