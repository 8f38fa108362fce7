"""`sixn flops`: the analytic table / JSON / CSV, custom shapes, bad flags, --measure."""

import json
import re

import pytest

from sixn.bench.cli import main
from sixn.bench.results import PROVENANCE_FIELDS, read_rows
from sixn.model import GPTConfig, accounting, executed, get_preset


def _run(capsys, *argv):
    rc = main(["flops", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_gpt2_small_json_figures(capsys):
    rc, out, _ = _run(capsys, "--preset", "gpt2-small", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["config"] == get_preset("gpt2-small").to_dict()
    assert d["params"]["nonembedding"] == 84_934_656
    assert d["params"]["total"] == 124_439_808
    assert d["params"]["embedding"] == (50257 + 1024) * 768
    fpt = d["flops_per_token"]
    assert fpt["kaplan_6N"] == 509_607_936
    assert fpt["kaplan_6N_context"] == 509_607_936 + 6 * 12 * 1024 * 768
    assert set(fpt) >= {"kaplan_6N", "kaplan_6N_context", "palm", "full_model"}
    assert all(isinstance(v, int) for v in fpt.values())
    # Kaplan's forward context term: C_forward - 2N = 2 n_layer n_ctx d_attn
    assert d["C_forward"] - 2 * d["N"] == d["context_term_forward"] == 2 * 12 * 1024 * 768 == 18_874_368
    comps = [r["component"] for r in d["rows"]]
    assert comps[:6] == ["embed", "attention: QKV", "attention: mask", "attention: project",
                         "feedforward", "de-embed"]
    assert all({"component", "params", "forward_flops"} <= set(r) for r in d["rows"])
    assert fpt["full_model"] == sum(r["forward_flops"] + r["backward_flops"] for r in d["rows"])


def test_table_is_readable(capsys):
    rc, out, _ = _run(capsys, "--preset", "gpt2-small")
    assert rc == 0
    lines = out.splitlines()
    qkv = next(ln for ln in lines if ln.startswith("attention: QKV"))
    assert "42,467,328" in qkv  # Kaplan's and the model's figure side by side
    assert any(ln.startswith("loss (cross-entropy)") for ln in lines)  # a left-out row
    for conv, ratio in (("kaplan_6N", "1.0000"), ("kaplan_6N_context", "1.1111")):
        ln = next(ln for ln in lines if ln.strip().startswith(conv + " "))
        assert ratio in ln
    assert "84,934,656" in out and "124,439,808" in out and "18,874,368" in out
    assert max(len(ln) for ln in lines) < 200


def test_custom_shape_from_flags(capsys):
    rc, out, _ = _run(capsys, "--n-layer", "4", "--d-model", "256", "--n-ctx", "512", "--json")
    assert rc == 0
    d = json.loads(out)
    cfg = GPTConfig.from_shape(4, 256, n_ctx=512, n_vocab=50257)
    assert {k: d["config"][k] for k in ("d_attn", "d_ff", "n_head")} == {"d_attn": 256, "d_ff": 1024,
                                                                        "n_head": 4}
    assert d["flops_per_token"] == accounting(cfg).to_dict()["flops_per_token"]
    assert d["N"] == 12 * 4 * 256 ** 2
    # explicit fields override the preset; --seq-len changes the context term only
    rc, out, _ = _run(capsys, "--preset", "tiny", "--d-ff", "100", "--untied-head", "--seq-len", "32",
                      "--json")
    d = json.loads(out)
    assert d["config"]["d_ff"] == 100 and d["config"]["tie_head"] is False and d["seq_len"] == 32
    assert d["context_term_forward"] == 2 * 2 * 32 * 64


@pytest.mark.parametrize("argv, msg", [
    (["--d-model", "100", "--n-head", "3"], "divisible by n_head"),
    (["--n-layer", "0"], "argument --n-layer: must be a positive integer"),
    (["--preset", "gpt5"], "unknown preset 'gpt5'; known presets"),
    (["--preset", "tiny", "--seq-len", "65"], r"--seq-len must be in \[1, n_ctx=64\]"),
    (["--preset", "tiny", "--measure", "dispatch", "--batch", "0"], "argument --batch: must be a positive integer"),
    (["--preset", "tiny", "--measure", "dispatch", "--dtype", "int4"], "unknown dtype"),
    (["--preset", "tiny", "--measure", "interpreter", "--device", "meta"], "runs on the CPU"),
])
def test_bad_flags_exit_2(capsys, argv, msg):
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert re.search(msg, err), err
    assert out == ""


def test_argparse_errors_exit_2(capsys):
    assert main(["flops", "--n-layer", "x"]) == 2
    assert main(["flops", "--measure", "abacus"]) == 2


def test_list_presets(capsys):
    rc, out, _ = _run(capsys, "--list-presets")
    assert rc == 0
    assert "gpt2-small" in out and "ladder-1.1b" in out and "N=84,934,656" in out


def test_csv_rows_with_provenance(capsys, tmp_path):
    path = tmp_path / "rows.csv"
    rc, _, _ = _run(capsys, "--preset", "tiny", "--csv", str(path))
    assert rc == 0
    rows = read_rows(path)
    assert [r["component"] for r in rows] == [r.component for r in accounting(get_preset("tiny")).rows]
    assert all(set(PROVENANCE_FIELDS) <= set(r) for r in rows)


def test_measure_dispatch_json_and_files(capsys, tmp_path):
    out_dir = tmp_path / "out"
    rc, out, _ = _run(capsys, "--preset", "tiny", "--measure", "dispatch", "--batch", "2",
                      "--seq-len", "40", "--json", "--out", str(out_dir), "--csv",
                      str(tmp_path / "m.csv"))
    assert rc == 0
    d = json.loads(out)
    cfg = get_preset("tiny")
    ex = executed(cfg, 2, 40)
    assert d["counter"] == "dispatch"
    assert d["measured_total"] == d["analytic_executed_total"] == ex.matmul_total
    assert isinstance(d["measured_total"], int) and isinstance(d["model_flops_total"], int)
    assert d["model_flops_total"] == accounting(cfg, 40).training_per_token["full_model"] * 80
    rows = {r["component"]: r for r in d["rows"]}
    assert set(rows) == {"qkv", "attention", "project", "feedforward", "de-embed", "total"}
    assert rows["attention"]["measured"] == ex.by_group()["attention"]
    assert all(r["ratio"] == 1.0 for r in d["rows"])
    # summary and raw counter output saved side by side, with provenance
    summary = json.loads((out_dir / "tiny_dispatch_torch_b2_t40.json").read_text())
    raw = json.loads((out_dir / "tiny_dispatch_torch_b2_t40_raw.json").read_text())
    assert summary["provenance"]["git_commit"] and raw["raw"]["Global"]
    m = read_rows(tmp_path / "m.csv")
    assert m[-1]["component"] == "total" and int(m[-1]["measured"]) == ex.matmul_total


def test_measure_table_output(capsys, tmp_path):
    rc, out, _ = _run(capsys, "--preset", "tiny", "--measure", "dispatch", "--out", str(tmp_path))
    assert rc == 0
    assert "dispatch counter, backend torch" in out
    total = next(ln for ln in out.splitlines() if ln.startswith("total"))
    assert f"{executed(get_preset('tiny'), 1, 64).matmul_total:,}" in total and "1.000000" in total
