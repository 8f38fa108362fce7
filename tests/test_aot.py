"""The offline sm_90 compile (bench.aot, `sixn kernels --aot`): a representative subset compiled
for real with Triton's compiler and ptxas (no GPU), the ptxas report parser, and the fail-soft loop
with constructed Triton errors."""

import json

import pytest

from sixn.bench import aot
from sixn.bench.cli import main

SM90 = aot.ARCHS["sm_90"]


def _ptxas_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return bool(get_ptxas(90).path)
    except Exception:
        return False


needs_ptxas = pytest.mark.skipif(not _ptxas_available(), reason="this Triton has no bundled ptxas")


@needs_ptxas
def test_ci_subset_compiles_for_sm90_without_spills(capsys, tmp_path):
    """The CI gate: every configuration of the subset compiles, even shapes spill nothing, shared
    memory stays within sm_90's limit, and the cases of the full list reach every kernel that a
    launcher calls (recorded, not compiled)."""
    rc = main(["kernels", "--aot", "sm_90", "--subset", "ci", "--json", "--out", str(tmp_path)])
    rows = json.loads(capsys.readouterr().out)
    assert rows, "no row came back"
    bad = [(r["kernel"], r["error"]) for r in rows if not r["ok"]]
    assert not bad, bad
    assert {r["kernel"] for r in rows} >= {"_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq",
                                           "_linear_gelu_fwd", "_linear_gelu_bwd_dx",
                                           "_linear_gelu_bwd_dw"}
    for r in rows:
        assert r["shared_bytes"] <= SM90.shared_limit, r
        assert 0 < r["registers"] <= SM90.max_registers, r
        if "even" in r["shape_class"].split("/"):
            assert r["spill_bytes"] == 0, f"{r['kernel']} {r['config']} spills {r['spill_bytes']} B"
    summary = json.loads(next(tmp_path.glob("aot-sm_90-triton-*.json")).read_text())
    assert summary["kernels_not_covered"] == [], summary["kernels_not_covered"]
    assert summary["configurations"] == len(rows) and rc == 0


PTXAS_LOG = """\
ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_attn_fwd' for 'sm_90a'
ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in the function '_attn_fwd'
ptxas info    : Function properties for _attn_fwd
    880 bytes stack frame, 884 bytes spill stores, 880 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 384 bytes cmem[0]
ptxas info    : Compile time = 52.280 ms
"""


def test_ptxas_report_is_read():
    r = aot.parse_ptxas(PTXAS_LOG)
    assert (r["registers"], r["stack_frame"], r["spill_stores"], r["spill_loads"]) == (255, 880, 884, 880)
    assert r["advisories"] == ["C7515 wgmma.mma_async instructions are serialized due to non wgmma"]
    assert aot.parse_ptxas(PTXAS_LOG.replace("880 bytes stack frame, 884 bytes spill stores, 880",
                                             "0 bytes stack frame, 0 bytes spill stores, 0"))["spill_stores"] == 0
    with pytest.raises(ValueError, match="no 'Used N registers'"):
        aot.parse_ptxas("ptxas info    : Compile time = 1 ms\n")


def _triton_errors():
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources, PTXASError
    return {"compilation": CompilationError("def k(): pass", None, "tl.dot shapes do not match"),
            "resources": OutOfResources(262144, 232448, "shared memory"),
            "ptxas": PTXASError("`ptxas` failed with error code 255")}


def test_one_failing_compile_among_several_keeps_the_other_rows():
    """Constructed Triton errors for some launches (and a case that cannot be recorded): each is
    its own error row, the others compile, every row is emitted as it is made."""
    errors = _triton_errors()
    cases = [aot.AotCase("mlp", "bf16", name, (i, 1, 1, True, False))
             for i, name in enumerate(["even", "compilation", "resources", "ptxas", "broken", "even2"])]

    def record_fn(case):
        if case.shape_class == "broken":
            raise RuntimeError("PyTorch is not linked with support for cuda devices")
        return [aot.Launch(f"k_{case.shape_class}", None, (), {})]

    def compile_fn(launch, arch):
        kind = launch.kernel[2:]
        if kind in errors:
            raise errors[kind]
        return {**{k: None for k in aot.ROW_KEYS}, "kernel": launch.kernel, "ok": True,
                "registers": 100, "spill_bytes": 0, "shared_bytes": 1024}

    def guarded(launch, arch):  # compile_launch's own contract: errors become rows
        try:
            return compile_fn(launch, arch)
        except Exception as e:
            return {**{k: None for k in aot.ROW_KEYS}, "kernel": launch.kernel, "ok": False,
                    "error": aot._error_text(e)}

    emitted = []
    rows = aot.compile_cases(cases, SM90, emitted.append, compile_fn=guarded, record_fn=record_fn,
                             key_fn=lambda la, arch: la.kernel)
    assert emitted == rows and len(rows) == 6
    by = {r["kernel"]: r for r in rows}
    assert by["k_even"]["ok"] and by["k_even2"]["ok"]
    assert by["k_compilation"]["error"].startswith("CompilationError")
    assert by["k_resources"]["error"].startswith("OutOfResources")
    assert by["k_ptxas"]["error"].startswith("PTXASError")
    broken = next(r for r in rows if r["shape_class"] == "broken")
    assert not broken["ok"] and "recording failed" in broken["error"]


def test_compile_launch_turns_errors_into_rows():
    """compile_launch itself never raises: a launch it cannot even specialise is an error row."""
    row = aot.compile_launch(aot.Launch("_nope", object(), (), {}), SM90)
    assert row["ok"] is False and row["kernel"] == "_nope" and "unsupported kernel wrapper" in row["error"]


def test_aot_summary_flags_failures_spills_and_coverage():
    from sixn.bench.commands.kernels import aot_summary, format_aot
    rows = [{**{k: None for k in aot.ROW_KEYS}, "kernel": "a", "dtype": "bf16", "shape_class": "even",
             "ok": True, "registers": 200, "spill_bytes": 0, "shared_bytes": 2048, "warps": 4, "stages": 3,
             "config": "X=1", "shared_limit": SM90.shared_limit},
            {**{k: None for k in aot.ROW_KEYS}, "kernel": "b", "dtype": "fp16", "shape_class": "padded-D",
             "ok": True, "registers": 255, "spill_bytes": 16, "shared_bytes": 4096, "warps": 4, "stages": 3,
             "config": "X=2", "shared_limit": SM90.shared_limit},
            {**{k: None for k in aot.ROW_KEYS}, "kernel": "c", "ok": False, "error": "PTXASError: boom",
             "shared_limit": SM90.shared_limit}]
    info = {"arch": "sm_90", "triton": "3.x", "launched_kernels": ["a", "b", "c", "d"],
            "recorded_kernels": ["a", "b", "c"]}
    s = aot_summary(info, rows, complete=True)
    assert not s["all_ok"] and s["failed"] == ["c  (None): PTXASError: boom"]
    assert s["spilling"] == ["b fp16 padded-D: 16 B"] and s["max_spill_bytes"] == 16
    assert s["max_shared_bytes"] == 4096 and s["kernels_not_covered"] == ["d"]
    text = format_aot(s)
    assert "3 configurations: 1 FAILED, 1 with spills (max 16 B)" in text
    assert "launched kernels no case compiled: d" in text
