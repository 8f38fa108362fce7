"""`sixn validate`: the 6N study writes its CSV/JSON/raw outputs and plots with provenance."""

import json

import pytest

from sixn.bench.cli import main
from sixn.bench.results import PROVENANCE_FIELDS, read_rows
from sixn.bench.commands.validate import DEFAULT_GRID, INTERPRETER_GRID, QUICK_GRID, run_validate, shape_config
from sixn.model import accounting, executed

from devices import HAS_CUDA

GRID = ((1, 32, 128, 64), (2, 64, 32, 512), (1, 16, 256, 300))


def test_grids_span_the_study():
    for grid in (DEFAULT_GRID, INTERPRETER_GRID):
        assert len(grid) >= 8
        ratios = [d / T for _, d, T, _ in grid]
        assert min(ratios) <= 0.07 and max(ratios) >= 2
        assert len({round(V / d, 2) for _, d, _, V in grid}) >= 4  # several n_vocab / d_model
        assert min(ratios) < 1 / 12 < max(ratios)  # Kaplan's line inside the span
        for s in grid:
            shape_config(s)  # valid configs
    assert len(QUICK_GRID) == 3


def test_run_validate_writes_results(tmp_path):
    res = run_validate(GRID, "dispatch", out_dir=tmp_path, progress=None)
    assert res["measured_equals_analytic"] and res["within_1pct"]
    assert len(res["rows"]) == 3
    for r, (L, d, T, V) in zip(res["rows"], GRID):
        cfg = shape_config((L, d, T, V))
        acc = accounting(cfg)
        assert r["measured"] == executed(cfg, 1, T).matmul_total
        assert r["kaplan_6N"] == 6 * acc.N * T
        assert r["measured_over_6N"] == pytest.approx(r["measured"] / (6 * acc.N * T))
        assert r["measured_over_6N_context"] == pytest.approx(
            r["measured"] / acc.training_per_token["kaplan_6N_context"] / T)
        assert r["measured_over_full_model"] == pytest.approx(
            r["measured"] / acc.training_per_token["full_model"] / T)
        assert r["head_share"] == pytest.approx(2 * 3 * T * d * V / r["measured"])
        assert r["d_model_over_n_ctx"] == d / T
        # the torch reference runs the full T x T square: (T * T) / (T (T + 1) / 2) - 1
        assert r["torch_attention_square_overhead"] == pytest.approx(2 * T / (T + 1) - 1)
    # the 6N rule is far off at small d_model / n_ctx with a big head, and closer at large ratios
    assert res["rows"][2]["measured_over_6N"] > res["rows"][1]["measured_over_6N"]
    # files: CSV and JSON with provenance, raw per shape, three plots
    rows = read_rows(tmp_path / "validate.csv")
    assert len(rows) == 3 and all(set(PROVENANCE_FIELDS) <= set(r) for r in rows)
    assert int(rows[0]["measured"]) == res["rows"][0]["measured"]
    saved = json.loads((tmp_path / "validate.json").read_text())
    assert saved["provenance"]["command"] and saved["rows"][1]["shape"] == "L2-d64-T32-V512"
    raw = json.loads((tmp_path / "raw_L1-d32-T128-V64.json").read_text())
    assert raw["counter"] == "dispatch" and raw["raw"]["Global"] and raw["provenance"]
    for name in ("validate_ratios.png", "validate_head_share.png", "validate_overheads.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_validate_cli(tmp_path, capsys):
    rc = main(["validate", "--quick", "--out", str(tmp_path), "--no-plots", "--json"])
    cap = capsys.readouterr()
    assert rc == 0
    res = json.loads(cap.out)
    assert res["grid"] == [shape_config(s).name for s in QUICK_GRID]
    assert "[3/3]" in cap.err  # progress on stderr
    assert (tmp_path / "validate.csv").exists() and not (tmp_path / "validate_ratios.png").exists()
    rc = main(["validate", "--quick", "--grid", "default"])
    assert rc == 2 and "exclusive" in capsys.readouterr().err


def test_validate_default_location(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIXN_RESULTS", str(tmp_path))
    rc = main(["validate", "--quick", "--no-plots"])
    assert rc == 0
    assert (tmp_path / "validate" / "cpu" / "validate.json").exists()
    assert "measured == analytic executed for every shape: True" in capsys.readouterr().out


def test_validate_bad_input(capsys):
    with pytest.raises(ValueError, match="n_layer, d_model, n_ctx, n_vocab"):
        run_validate([(1, 2)], progress=None)
    with pytest.raises(ValueError, match="unknown counter"):
        run_validate(GRID, counter="abacus", progress=None)
    assert main(["validate", "--batch", "0"]) == 2


@pytest.mark.skipif(HAS_CUDA, reason="interpreter runs on the CPU")
def test_validate_interpreter_triton(tmp_path):
    """The interpreter counter over a one-shape grid: the triton kernels' executed count is exact
    and their attention overheads (block granularity, recompute) are reported apart."""
    res = run_validate([(1, 16, 48, 64)], "interpreter", out_dir=tmp_path, plots=False,
                       progress=None)
    (r,) = res["rows"]
    assert res["backend"] == "triton" and res["measured_equals_analytic"]
    assert r["measured"] == r["analytic_executed"]
    assert r["triton_causal_block_overhead"] > 0 and r["triton_backward_recompute_overhead"] > 0
    # the kernels' count (tiles, padding, recompute) is not the dense torch reference's
    assert r["measured"] != executed(shape_config((1, 16, 48, 64)), 1, 48).matmul_total
    assert r["spec"] == "triton" and r["counter"] == "interpreter"


def test_validate_models_quick(tmp_path):
    from sixn.bench.commands.validate import run_models
    res = run_models(["gpt2-small", "mixtral-8x7b"], out_dir=tmp_path, quick=True, plots=False)
    rows = {r["model"]: r for r in res["rows"]}
    g, m = rows["gpt2-small"], rows["mixtral-8x7b"]
    assert g["measured_step"] == g["analytic_executed_step"] and m["measured_step"] is None
    assert m["full_model_over_6N"] < 1 < m["full_model_over_6N_active"]  # 6N counts every expert
    assert g["full_model_over_6N"] > 1 and g["params_total"] == 124_439_808
    for r in rows.values():
        shares = sum(r[f"{t}_share"] for t in ("head", "attention_context", "gating", "routing",
                                                 "norms_and_other")) + r["block_matmuls_share"]
        assert abs(shares - 1) < 1e-9  # the terms add up to the count
    assert (tmp_path / "models.csv").exists() and (tmp_path / "models.json").exists()
