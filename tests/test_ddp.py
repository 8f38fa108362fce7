"""`sixn bench --ddp 2` on the CPU: two gloo processes under torchrun, rank 0's rows collected."""

import json
import math


from sixn.bench.cli import main
from sixn.bench.results import PROVENANCE_FIELDS, read_rows
from sixn.model.flops import accounting
from sixn.model.presets import get_preset


def test_bench_ddp_two_gloo_processes(capsys, tmp_path, one_thread):
    rc = main(["bench", "--device", "cpu", "--preset", "tiny", "--provider", "torch",
               "--steps", "3", "--warmup", "1", "--batch", "2", "--seq-len", "32",
               "--ddp", "2", "--json", "--no-plots", "--csv", str(tmp_path / "extra.csv")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "[sixn bench ddp]" in cap.err            # the ranks' progress, forwarded
    rows = json.loads(cap.out)
    single = [r for r in rows if r["provider"] == "torch" and r["world_size"] == 1]
    ddp = [r for r in rows if r["world_size"] == 2]
    assert len(single) == 1 and len(ddp) == 1
    r = ddp[0]
    assert r["error"] is None and r["device"].startswith("2 x CPU")
    assert (r["batch"], r["seq_len"]) == (2, 32)
    # total: both ranks' tokens per (synchronous) step over the step time
    assert math.isclose(r["tokens_per_s"], 2 * 2 * 32 / (r["step_ms"] / 1e3), rel_tol=1e-9)
    assert math.isclose(r["tokens_per_s_per_device"], r["tokens_per_s"] / 2, rel_tol=1e-9)
    per_rank = r["tokens_per_s_ranks"]
    assert len(per_rank) == 2 and all(x > 0 for x in per_rank)
    # the step runs at the slowest rank's pace
    assert math.isclose(min(per_rank), r["tokens_per_s_per_device"], rel_tol=1e-9)
    assert r["flops_per_token"] == accounting(get_preset("tiny"), 32).training_per_token["palm"]
    assert math.isclose(r["tokens_per_s"] * r["flops_per_token"], r["tflops"] * 1e12, rel_tol=1e-9)
    assert r["mfu"] is None and r["hfu"] is None
    assert all(r[k] for k in PROVENANCE_FIELDS)
    extra = read_rows(tmp_path / "extra.csv")
    assert [x["world_size"] for x in extra if x["provider"] == "torch"] == [1, 2]


def test_ddp_module_outside_torchrun(capsys, monkeypatch):
    from sixn.bench import ddp
    monkeypatch.delenv("RANK", raising=False)
    assert ddp.main(["--device", "cpu", "--preset", "tiny", "--provider", "torch",
                     "--out", "x.json"]) == 2
    assert "torchrun" in capsys.readouterr().err
