"""`sixn bench` on the CPU, datasheet peaks, row arithmetic, profiler families and `sixn kernels`'
measuring functions (run on CPU tensors; the command itself needs a GPU)."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from sixn.bench import peaks
from sixn.bench.cli import main
from sixn.bench.results import PROVENANCE_FIELDS, read_rows
from sixn.bench.step import (PROVIDERS, ROW_KEYS, build_step, check_targets, kernel_family,
                              make_row, profile_step)
from sixn.model.flops import EXACT_GEMM, ExecSpec, accounting, attention_model_flops, executed
from sixn.model.presets import get_preset

from devices import HAS_CUDA

JSON_KEYS = {"preset", "provider", "device", "batch", "seq_len", "tokens_per_s", "tokens_per_s_p20",
             "tokens_per_s_p80", "step_ms", "flops_per_token", "flops_per_token_kaplan_6N_context",
             "flops_per_token_executed", "tflops", "mfu", "mfu_kaplan_6N_context", "hfu",
             "peak_mem_gb"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _results() -> Path:
    return Path(os.environ["SIXN_RESULTS"])


def _close(a, b, rel=1e-9):
    return math.isclose(a, b, rel_tol=rel, abs_tol=0)


def test_bench_cpu_tiny_json(capsys):
    rc = main(["bench", "--device", "cpu", "--preset", "tiny", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = json.loads(cap.out)
    assert isinstance(rows, list)
    assert "[sixn bench]" in cap.err and "tiny torch" in cap.err      # progress on stderr

    steps = [r for r in rows if not r["provider"].startswith("roof:")]
    assert [r["provider"] for r in steps] == ["torch", "torch-sdpa-eager"]
    cfg = get_preset("tiny")
    for r in rows:
        assert JSON_KEYS <= set(r), JSON_KEYS - set(r)
        assert all(r[k] for k in PROVENANCE_FIELDS), r
    for r in steps:
        assert r["error"] is None and r["preset"] == "tiny" and r["device"].startswith("CPU")
        B, T = r["batch"], r["seq_len"]
        assert (B, T) == (4, 64)
        acc = accounting(cfg, T).training_per_token
        assert r["flops_per_token"] == acc["palm"]
        assert r["flops_per_token_kaplan_6N_context"] == acc["kaplan_6N_context"]
        # tokens/s x FLOPs per token = the reported FLOP/s, and tokens/s = tokens per step / time
        assert _close(r["tokens_per_s"] * r["flops_per_token"], r["tflops"] * 1e12)
        assert _close(r["tokens_per_s"] * r["flops_per_token_kaplan_6N_context"],
                      r["tflops_kaplan_6N_context"] * 1e12)
        assert _close(r["tokens_per_s"], B * T / (r["step_ms"] / 1e3))
        assert r["tokens_per_s_p20"] <= r["tokens_per_s"] <= r["tokens_per_s_p80"]
        assert r["tflops"] > 0
        # no datasheet peak on a CPU: MFU and HFU are null, the measured roof is used instead
        assert r["mfu"] is None and r["mfu_kaplan_6N_context"] is None and r["hfu"] is None
        assert r["peak_tflops"] is None and r["peak_mem_gb"] is None
        assert _close(r["mfu_vs_measured_roof"], r["tflops"] / r["measured_roof_tflops"])
    torch_row, sdpa_row = steps
    assert torch_row["flops_per_token_executed"] == executed(cfg, 4, 64, ExecSpec()).total / (4 * 64)
    assert _close(torch_row["tflops_executed"] * 1e12,
                  torch_row["tokens_per_s"] * torch_row["flops_per_token_executed"])
    assert sdpa_row["flops_per_token_executed"] is None and sdpa_row["tflops_executed"] is None

    gemms = [r for r in rows if r["provider"] == "roof:gemm"]
    copy = [r for r in rows if r["provider"] == "roof:copy"]
    assert len(gemms) == 3 and len(copy) == 1
    for g in gemms:
        M, N, K = map(int, g["shape"].split("x"))
        assert _close(g["tflops"] * 1e12, EXACT_GEMM.forward_flops(M, N, K) / (g["step_ms"] / 1e3))
        assert g["mfu"] is None and g["tokens_per_s"] is None
    assert steps[0]["measured_roof_tflops"] == max(g["tflops"] for g in gemms)
    assert copy[0]["bandwidth_gbs"] > 0

    out = _results() / "bench" / "cpu"
    csv_rows = read_rows(out / "bench.csv")
    assert len(csv_rows) == len(rows)
    assert all(r[k] for r in csv_rows for k in PROVENANCE_FIELDS)
    assert [r["provider"] for r in csv_rows] == [r["provider"] for r in rows]
    assert float(csv_rows[-1]["tokens_per_s"]) == pytest.approx(steps[-1]["tokens_per_s"])
    summary = json.loads((out / "bench.json").read_text())
    assert summary["peak"] is None and summary["provenance"]["git_commit"]
    assert any("CPU figures" in n for n in summary["notes"])
    assert any("triton" in n and "interpreter" in n for n in summary["notes"])
    for png in ("throughput.png", "mfu.png", "roofline.png"):
        assert (out / png).stat().st_size > 1000

    from sixn.bench.commands.bench import format_table
    table = format_table(summary)
    assert "CPU figures" in table and "torch-sdpa-eager" in table and "datasheet peak: none" in table


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--provider", "nope"], "unknown provider 'nope'"),
    (["--device", "cpu", "--provider", "triton"], "interpreter"),
    (["--device", "cpu", "--preset", "tiny", "--steps", "0"], "argument --steps: must be a positive integer"),
    (["--device", "cpu", "--preset", "tiny", "--seq-len", "65"], "exceeds preset 'tiny'"),
    (["--device", "cpu", "--preset", "tiny", "--ddp", "0"], "argument --ddp: must be a positive integer"),
])
def test_bench_bad_flags(capsys, argv, message):
    rc = main(["bench", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU message")
def test_bench_cuda_without_gpu(capsys):
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_bench_argparse_choices():
    assert main(["bench", "--device", "tpu"]) == 2


def test_peaks_lookup():
    h100 = peaks.lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100.bf16 == pytest.approx(989.4e12)
    assert h100.for_dtype(torch.bfloat16) == h100.bf16 and h100.for_dtype("tf32") == h100.tf32
    assert "H100" in h100.source and "dense" in h100.source
    assert peaks.lookup("NVIDIA H200").bf16 == pytest.approx(989.4e12)
    assert peaks.lookup("NVIDIA H100 PCIe").bf16 < h100.bf16
    assert peaks.lookup("NVIDIA A100-SXM4-80GB").bf16 == pytest.approx(312e12)
    # dense, never the sparsity figure (1979 for the H100 SXM)
    assert all(p.bf16 < 1000e12 for _, p in peaks._TABLE)
    assert all(p.source for _, p in peaks._TABLE)
    # unknown or ambiguous devices get no peak, never a guess
    for name in ("NVIDIA H100", "Some Future GPU", "NVIDIA A10G", "", None):
        assert peaks.lookup(name) is None
    assert "no datasheet peak" in peaks.unknown_message("X")
    with pytest.raises(ValueError, match="supported"):
        h100.for_dtype("int8")


def test_make_row_arithmetic_and_targets():
    """Every figure of a row derives from tokens/s x FLOPs/token; DDP rows use world_size peaks."""
    fpt = {"palm": 1_000_000, "kaplan_6N_context": 800_000, "executed": 1_100_000}
    kw = dict(preset="gpt2-small", device_name="X", device=torch.device("cpu"), batch=2, seq_len=64,
              n_params=1, N=1, steps=3, warmup=1, step_ms_p20=9.0, step_ms_p80=12.0, fpt=fpt,
              peak_flops=1e12, peak_source="s", measured_roof=5e11, peak_mem_gb=None)
    r = make_row(provider="triton", step_ms=10.0, **kw)
    assert list(r) == list(ROW_KEYS)
    assert r["tokens_per_s"] == pytest.approx(128 / 0.010)
    assert r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e6 / 1e12)
    assert r["hfu"] == pytest.approx(r["mfu"] * 1.1)
    assert r["mfu_kaplan_6N_context"] == pytest.approx(r["mfu"] * 0.8)
    assert r["mfu_vs_measured_roof"] == pytest.approx(2 * r["mfu"])
    assert r["tokens_per_s_p20"] == pytest.approx(128 / 0.012)
    d = make_row(provider="triton", step_ms=10.0, world_size=2, **kw)
    assert d["tokens_per_s"] == pytest.approx(2 * r["tokens_per_s"])
    assert d["tokens_per_s_per_device"] == pytest.approx(r["tokens_per_s"])
    assert d["mfu"] == pytest.approx(r["mfu"])   # against 2 x the peak

    eager = make_row(provider="torch-sdpa-eager", step_ms=12.5, **kw)
    comp = make_row(provider="torch-sdpa-compile", step_ms=9.0, **kw)
    t = {x["target"].split(" (")[0]: x for x in check_targets([r, eager, comp], 700.0)}
    assert t["measured GEMM roof"]["met"] is False
    over = [x for x in t.values() if "over" in x["target"]]
    assert over[0]["value"] == pytest.approx(1.25) and over[0]["met"] is True
    assert over[1]["value"] == pytest.approx(0.9) and over[1]["met"] is False
    assert check_targets([], None)[1]["met"] is None


def test_kernel_families_and_cpu_profile():
    cases = {"nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_NNT": "gemm",
             "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64": "gemm",
             "_attn_fwd": "attention", "pytorch_flash::flash_bwd_kernel": "attention",
             "cudnn_generated_fort_native_sdpa_sm90_flash_fprop": "attention",
             "_linear_gelu_fwd_kernel": "mlp", "multi_tensor_apply_kernel": "optimizer",
             "triton_poi_fused_add_0": "inductor", "aten::native_layer_norm": "layernorm",
             "something_else": "other"}
    for name, fam in cases.items():
        assert fam in kernel_family(name), (name, kernel_family(name))
    cfg = get_preset("tiny")
    step, _ = build_step(cfg, "torch", torch.device("cpu"), 2, 32)
    step()
    prof = profile_step(step, torch.device("cpu"), steps=2)
    assert prof and all(v >= 0 for v in prof.values())
    assert "gemm (cuBLAS / aten mm)" in prof and "optimizer (AdamW)" in prof
    assert list(prof.values()) == sorted(prof.values(), reverse=True)


# ------------------------------------------------------------------------------------------------
# sixn kernels
# ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU exit")
def test_kernels_needs_cuda(capsys):
    assert main(["kernels", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "sixn bench --device cpu" in err


@pytest.mark.parametrize("argv, message", [
    (["--head-dim", "48"], "divide hidden=2048"),
    (["--provider", "nope"], "unknown provider 'nope'"),
    (["--tokens", "0"], "argument --tokens: must be a positive integer"),
    (["--family", "mlp", "--mode", "bwd"], "nothing to measure"),
])
def test_kernels_bad_flags(capsys, argv, message):
    assert main(["kernels", *argv]) == 2
    assert message in capsys.readouterr().err


def test_kernel_measurements_on_cpu(tmp_path, monkeypatch):
    """The measuring functions on CPU tensors: SDPA backends and the interpreted triton kernels,
    correctness-checked, FLOPs from model.flops, ratios and the figures."""
    from sixn.bench.commands import kernels as K
    from sixn.bench import plots
    from sixn.kernels.attention import attention_exec
    from sixn.kernels.mlp import linear_gelu_exec
    case = K.AttnCase(B=2, H=2, T=32, D=16, causal=True)
    rows = K.measure_attention(case, ["sdpa-math", "sdpa-flash", "triton"], "cpu", torch.float32,
                               modes=("fwd", "fwd+bwd"), rep_ms=1)
    assert len(rows) == 6
    ex = attention_exec(32, 16, torch.float32, "cpu")
    for r in rows:
        assert r["error"] is None, r
        assert r["max_rel_err"] < 1e-5
        assert r["model_flops"] == attention_model_flops(2, 2, 32, 16, True, r["mode"])
        assert r["tflops"] * 1e12 == pytest.approx(r["model_flops"] / (r["ms"] / 1e3))
        assert r["ms_p20"] <= r["ms"] <= r["ms_p80"]
        if r["provider"] == "triton":
            fwd = ex.forward_flops(2, 2, 32, 16, True)
            want = fwd if r["mode"] == "fwd" else fwd + ex.backward_flops(2, 2, 32, 16, True)
            assert r["executed_flops"] == want and want > r["model_flops"]
        else:
            assert r["executed_flops"] is None
    mlp = K.measure_mlp(40, 96, 32, ["torch", "triton"], "cpu", torch.float32, rep_ms=1)
    ge = linear_gelu_exec(40, 96, 32, torch.float32, "cpu")
    for r in mlp:
        assert r["error"] is None and r["max_rel_err"] < 1e-5, r
        fwd = EXACT_GEMM.forward_flops(40, 96, 32)
        assert r["model_flops"] == (fwd if r["mode"] == "fwd" else fwd + EXACT_GEMM.backward_flops(40, 96, 32))
        if r["provider"] == "triton":
            want = ge.forward_flops(40, 96, 32) + (ge.backward_flops(40, 96, 32) if r["mode"] != "fwd" else 0)
            assert r["executed_flops"] == want
    rat = K.ratios(rows + mlp)
    assert len(rat) == 2 * 2 + 2   # attention: 2 baselines x 2 modes; mlp: 1 baseline x 2 modes
    for q in rat:
        assert q["ratio"] == pytest.approx(q["triton_tflops"] / q["baseline_tflops"])
    assert "vs sdpa-flash" in K.format_table(rows + mlp, rat)

    assert plots.plot_attention(rows, tmp_path / "a.png", "fwd").stat().st_size > 1000
    assert plots.plot_mlp(mlp, tmp_path / "m.png").stat().st_size > 1000
    assert plots.plot_roofline(rows + mlp, tmp_path / "r.png", 1.0, 10.0).stat().st_size > 1000

    # a triton case that fails its correctness check is not timed
    monkeypatch.setitem(K.TOLERANCE, torch.float32, -1.0)
    bad = K.measure_attention(case, ["triton"], "cpu", torch.float32, modes=("fwd",), rep_ms=1)
    assert bad[0]["ms"] is None and "correctness check failed" in bad[0]["error"]


def test_providers_table():
    assert PROVIDERS["torch-sdpa-compile"] == ("sdpa", True)
    assert PROVIDERS["triton"] == ("triton", False)


def test_run_bench_halves_batch_on_oom_and_reports_failures(monkeypatch):
    from sixn.bench import step as ts
    from sixn.bench.timing import Timing
    calls = []

    def fake(cfg, provider, dev, b, T, steps, warmup, profile):
        calls.append((provider, b))
        if provider == "torch-sdpa-eager":
            raise RuntimeError("boom\nsecond line")
        if b > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return Timing(10.0, 9.0, 11.0, steps), None, None, 123

    monkeypatch.setattr(ts, "_measure_one", fake)
    rows = ts.run_bench(["tiny"], ["torch", "torch-sdpa-eager"], "cpu", batch=4, progress=None)
    assert calls == [("torch", 4), ("torch", 2), ("torch", 1), ("torch-sdpa-eager", 4)]
    assert rows[0]["batch"] == 1 and rows[0]["error"] is None
    assert rows[0]["tokens_per_s"] == pytest.approx(64 / 0.010)
    assert rows[1]["error"] == "RuntimeError: boom" and rows[1]["tokens_per_s"] is None
    assert list(rows[1]) == list(ROW_KEYS)


@pytest.mark.gpu
def test_bench_cuda_tiny_providers(capsys):
    rc = main(["bench", "--device", "cuda", "--preset", "tiny", "--provider", "triton",
               "--provider", "torch-sdpa-eager", "--steps", "3", "--warmup", "2", "--json", "--no-plots"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = [r for r in json.loads(cap.out) if not r["provider"].startswith("roof:")]
    assert [r["provider"] for r in rows] == ["triton", "torch-sdpa-eager"]
    peak = peaks.lookup(torch.cuda.get_device_name())
    for r in rows:
        assert r["error"] is None, r
        assert _close(r["tokens_per_s"] * r["flops_per_token"], r["tflops"] * 1e12)
        assert r["peak_mem_gb"] > 0
        assert (r["mfu"] is None) == (peak is None)
        if peak is not None:
            assert _close(r["mfu"], r["tflops"] * 1e12 / peak.bf16)
    assert rows[0]["flops_per_token_executed"] > 0 and rows[1]["hfu"] is None


@pytest.mark.gpu
def test_kernels_cuda_smoke(capsys):
    rc = main(["kernels", "--seq-len", "512", "--head-dim", "64", "--causal", "causal",
               "--mlp-d-model", "768", "--mode", "fwd", "--rep-ms", "20", "--json", "--no-plots"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = json.loads(cap.out)
    tri = [r for r in rows if r["provider"] == "triton"]
    assert {r["family"] for r in tri} == {"attention", "mlp"}
    assert all(r["error"] is None and r["tflops"] > 0 for r in tri), tri
