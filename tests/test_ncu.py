"""The ncu counter (bench.counters.ncu) on the CPU: its error paths through a stand-in `ncu`
executable that prints constructed output, the raw CSV kept whenever a count is refused, the
fixtures command, and the parser on output recorded on a GPU (tests/data/ncu_*.csv, when there).

The stand-in is a shell script: called to profile (`... -o REPORT <child> ...`) it prints the
lines given for that child ("gemm" or "step") on stderr and writes REPORT.ncu-rep holding that
child's CSV; called to export (`-i REPORT.ncu-rep ...`) it prints the file. It never runs the child.
"""

import csv
import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from sixn.bench import counters
from sixn.bench.counters import CounterError, count_step, ncu
from sixn.kernels.backends import exec_spec
from sixn.model import GPTConfig, executed, get_preset

DATA = Path(__file__).parent / "data"
BF16 = ncu.TENSOR_FAMILIES["bf16/wgmma"]
BF16_PARENT = ncu.TENSOR_TOTALS["bf16"]

# Lines an ncu of 2025 printed where it could not profile, as seen on the GPU machines this
# project uses (LibraryNotLoaded) and as ncu words its permission error.
LIBRARY_NOT_LOADED = ("==PROF== Connected to process 4242 (/usr/bin/python3.12)\n"
                      "==ERROR== Failed to initialize the profiler: LibraryNotLoaded\n"
                      "==PROF== Disconnected from process 4242\n"
                      "==WARNING== No kernels were profiled.\n")
NO_PERMISSION = ("==PROF== Connected to process 4242 (/usr/bin/python3.12)\n"
                 "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA "
                 "GPU Performance Counters on the target device 0. For instructions on enabling "
                 "permissions and to get more information see "
                 "https://developer.nvidia.com/ERR_NVGPUCTRPERM\n"
                 "==PROF== Disconnected from process 4242\n")


def raw_csv(kernels: list[tuple[str, str, int, int]]) -> str:
    """An ncu raw-page CSV: header, units row, one row per (name, nvtx, bf16 wgmma, bf16 parent);
    every other requested metric 0."""
    metrics = ncu.all_metrics()
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(["ID", "Kernel Name", "NVTX", *metrics])
    w.writerow(["", "", "", *("inst" for _ in metrics)])
    for i, (name, nvtx, fam, parent) in enumerate(kernels):
        vals = {m: 0 for m in metrics}
        vals[BF16], vals[BF16_PARENT] = fam, parent
        w.writerow([str(i), name, nvtx, *(f"{vals[m]:,}" for m in metrics)])
    return buf.getvalue()


def gemm_csv(n: int = ncu.GEMM_CHECK_N) -> str:
    f = 2 * n ** 3
    return raw_csv([("sm90_xmma_gemm_bf16", '"<default domain>:train_step:none"', f, f)])


def step_csv(parent_extra: int = 0) -> str:
    """One kernel per group of a step; parent_extra != 0 breaks the family check."""
    ranges = ["sixn_qkv", "sixn_attention", "sixn_project", "sixn_feedforward", None]
    rows = []
    for i, r in enumerate(ranges):
        nvtx = '"<default domain>:train_step:none"' + (f' "<default domain>:{r}:none"' if r else "")
        v = 1000 * (i + 1)
        rows.append((f"kernel_{i}", nvtx, v, v + (parent_extra if i == 0 else 0)))
    return raw_csv(rows)


@pytest.fixture
def fake_ncu(tmp_path, monkeypatch):
    """A stand-in ncu (SIXN_NCU) and a visible 'GPU'; returns a function setting, per child, the
    CSV it exports and the lines it prints while profiling."""
    folder = tmp_path / "fake-ncu"
    folder.mkdir()
    script = folder / "ncu"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-i" ]; then cat "$2"; exit 0; fi\n'
        'out=""; mode=""\n'
        'while [ $# -gt 0 ]; do\n'
        '  case "$1" in -o) out="$2"; shift;; gemm|step) mode="$1";; esac; shift\n'
        "done\n"
        f'cat "{folder}/$mode.log" >&2\n'
        f'if [ -f "{folder}/$mode.csv" ]; then cp "{folder}/$mode.csv" "$out.ncu-rep"; fi\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SIXN_NCU", str(script))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ncu, "_chip_name", lambda: "gh100")
    from sixn.model import memory
    monkeypatch.setattr(memory, "free_memory", lambda device: 80 * 2**30)  # the stand-in GPU's

    def setup(child: str, csv_text: str | None = None, log: str = "==PROF== Disconnected\n"):
        (folder / f"{child}.log").write_text(log)
        if csv_text is None:
            (folder / f"{child}.csv").unlink(missing_ok=True)
        else:
            (folder / f"{child}.csv").write_text(csv_text)

    setup("gemm", gemm_csv())
    setup("step", step_csv())
    return setup


def _fake_provenance(monkeypatch):
    """run_validate asks the device for its name; the stand-in GPU has none."""
    from sixn.bench import results
    real = results.provenance
    monkeypatch.setattr(results, "provenance",
                        lambda device=None, **kw: real("cpu", **kw) | {"device": "stand-in GPU"})


# ------------------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------------------

def test_ncu_not_installed(monkeypatch, tmp_path):
    monkeypatch.delenv("SIXN_NCU", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(ncu, "NSIGHT_GLOB", str(tmp_path / "none" / "*" / "ncu"))
    with pytest.raises(ncu.NcuUnavailable, match="ncu\\) is not installed or not on PATH") as e:
        ncu.ncu_path()
    assert e.value.reason == "not-installed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(CounterError, match="not installed"):
        ncu.check_environment()
    monkeypatch.setenv("SIXN_NCU", str(tmp_path / "nope"))
    with pytest.raises(CounterError, match="SIXN_NCU=.* is not an executable"):
        ncu.ncu_path()


def test_ncu_found_in_a_standalone_nsight_install(monkeypatch, tmp_path):
    monkeypatch.delenv("SIXN_NCU", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    for version in ("2024.1.0", "2025.3.1"):
        exe = tmp_path / "nsight-compute" / version / "ncu"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.setattr(ncu, "NSIGHT_GLOB", str(tmp_path / "nsight-compute" / "*" / "ncu"))
    assert ncu.ncu_path() == str(tmp_path / "nsight-compute" / "2025.3.1" / "ncu")


def test_ncu_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ncu.NcuUnavailable, match="needs an NVIDIA GPU, and no CUDA device is visible"):
        count_step(get_preset("tiny"), 1, 8, counter="ncu")


@pytest.mark.parametrize("argv", [["flops", "--preset", "tiny", "--measure", "ncu"],
                                  ["validate", "--counter", "ncu", "--quick"]])
def test_ncu_without_cuda_is_one_line_exit_2(monkeypatch, capsys, tmp_path, argv):
    from sixn.bench.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "validate" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sixn {argv[0]}: error: ")
    assert "no CUDA device is visible" in err[0]
    assert not any(tmp_path.iterdir())  # nothing half-written


# ------------------------------------------------------------------------------------------------
# What ncu prints when it cannot profile: named, and skippable
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("log, reason, words", [
    (LIBRARY_NOT_LOADED, "LibraryNotLoaded", "could not load its profiler library"),
    (NO_PERMISSION, "ERR_NVGPUCTRPERM", "NVreg_RestrictProfilingToAdminUsers=0"),
])
def test_unavailable_profiler_is_named(fake_ncu, log, reason, words):
    fake_ncu("gemm", None, log)
    with pytest.raises(ncu.NcuUnavailable, match=words) as e:
        ncu.gemm_self_check()
    assert e.value.reason == reason and reason in str(e.value)


def test_other_ncu_errors():
    with pytest.raises(CounterError, match="does not have the metric sm__bogus.sum.*--query-metrics"):
        ncu.check_ncu_output("==ERROR== Failed to find metric sm__bogus.sum", chip_hint="gh100")
    with pytest.raises(CounterError, match="ncu failed: ==ERROR== something else") as e:
        ncu.check_ncu_output("==ERROR== something else")
    assert not isinstance(e.value, ncu.NcuUnavailable)
    ncu.check_ncu_output("==PROF== Disconnected from process 1")  # no error: nothing raised


def test_no_report_written_is_an_error(fake_ncu):
    fake_ncu("gemm", None)  # ncu ran, printed no error, wrote no report
    with pytest.raises(CounterError, match="wrote no report"):
        ncu.gemm_self_check()


# ------------------------------------------------------------------------------------------------
# Counting through the stand-in, and the raw CSV kept when a count is refused
# ------------------------------------------------------------------------------------------------

def test_self_check_and_step_through_the_command_lines(fake_ncu):
    """profile() -> export -> parse -> attribution: the numbers the stand-in exports come back,
    by group, through the real command lines (the report path given with -o is the one exported)."""
    check = ncu.gemm_self_check()
    assert check["measured"] == check["expected"] == 2 * ncu.GEMM_CHECK_N ** 3
    assert check["csv"] == gemm_csv()
    cfg = get_preset("tiny").replace(backend="torch")
    sc = ncu.count_step_ncu(cfg, 1, 8, "cuda", torch.bfloat16, self_check=check)
    assert {g: sc.by_group[g] for g in ("qkv", "attention", "project", "feedforward", "de-embed")} \
        == {"qkv": 1000, "attention": 2000, "project": 3000, "feedforward": 4000, "de-embed": 5000}
    assert sc.total == 15000 and sc.raw["csv"] == step_csv()
    assert sc.raw["config"] == cfg.to_dict()


@pytest.mark.parametrize("bad_step, words", [
    (step_csv(parent_extra=500), "families do not add up"),
    (raw_csv([("k", '"<default domain>:train_step:none" "<default domain>:sixn_qkv:none"', 5, 5)]),
     "no tensor-core FLOPs for attention, project, feedforward, de-embed"),
    ('"ID","Kernel Name"\n"0","k","extra"\n', "could not be read"),
], ids=["families", "empty-groups", "unreadable"])
def test_refused_count_keeps_the_csv(fake_ncu, bad_step, words):
    fake_ncu("step", bad_step)
    cfg = get_preset("tiny").replace(backend="torch")
    with pytest.raises(ncu.NcuRefused, match=words) as e:
        ncu.count_step_ncu(cfg, 1, 8, "cuda", torch.bfloat16, self_check={"n": 1})
    assert e.value.csv == bad_step


def test_refused_self_check_keeps_the_csv(fake_ncu, tmp_path, monkeypatch):
    from sixn.bench.commands.validate import run_validate
    _fake_provenance(monkeypatch)
    wrong = gemm_csv(n=1024)  # 1/64 of the FLOPs of the 4096^3 product profiled
    fake_ncu("gemm", wrong)
    with pytest.raises(ncu.NcuRefused, match="self-check failed"):
        run_validate([(1, 16, 32, 64)], counter="ncu", out_dir=tmp_path, plots=False, progress=None)
    assert (tmp_path / "gemm_self_check.refused.csv").read_text() == wrong


def test_validate_goes_on_past_a_refused_shape(fake_ncu, tmp_path, monkeypatch):
    """One shape refused among several: its CSV is kept, the other shapes are counted."""
    from sixn.bench.commands.validate import run_validate
    _fake_provenance(monkeypatch)
    real_profile = ncu.profile
    calls = []

    def profile(child, *a, **kw):  # the second step profiled gets a CSV that fails a check
        calls.append(child[3])
        if child[3] == "step" and calls.count("step") == 2:
            fake_ncu("step", step_csv(parent_extra=500))
        elif child[3] == "step":
            fake_ncu("step", step_csv())
        return real_profile(child, *a, **kw)

    monkeypatch.setattr(ncu, "profile", profile)
    grid = [(1, 16, 32, 64), (1, 32, 32, 128), (1, 16, 16, 64)]
    res = run_validate(grid, counter="ncu", out_dir=tmp_path, plots=False, progress=None)
    assert calls == ["gemm", "step", "step", "step"]  # one self-check for the whole grid
    assert [r["shape"] for r in res["rows"]] == ["L1-d16-T32-V64", "L1-d16-T16-V64"]
    assert [r["shape"] for r in res["refused"]] == ["L1-d32-T32-V128"]
    assert (tmp_path / "refused_L1-d32-T32-V128.csv").read_text() == step_csv(parent_extra=500)
    assert (tmp_path / "gemm_self_check.csv").read_text() == gemm_csv()
    saved = json.loads((tmp_path / "validate.json").read_text())
    assert saved["complete"] is True and saved["refused"][0]["csv_file"] == "refused_L1-d32-T32-V128.csv"


def test_fixtures_from_a_validate_folder(fake_ncu, tmp_path, monkeypatch):
    from sixn.bench.commands.validate import run_validate
    _fake_provenance(monkeypatch)
    out, dest = tmp_path / "validate", tmp_path / "data"
    run_validate([(1, 16, 32, 64)], counter="ncu", out_dir=out, plots=False, progress=None)
    assert ncu.main(["fixtures", str(out), str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == [
        "ncu_gemm_4096.csv", "ncu_gemm_4096.json", "ncu_step_L1-d16-T32-V64_triton.csv",
        "ncu_step_L1-d16-T32-V64_triton.json"]
    meta = json.loads((dest / "ncu_step_L1-d16-T32-V64_triton.json").read_text())
    assert GPTConfig.from_dict(meta["config"]).d_model == 16 and meta["seq_len"] == 32
    assert (dest / "ncu_step_L1-d16-T32-V64_triton.csv").read_text() == step_csv()
    assert json.loads((dest / "ncu_gemm_4096.json").read_text())["n"] == 4096
    assert ncu.main(["fixtures", str(tmp_path / "empty"), str(dest)]) == 2


# ------------------------------------------------------------------------------------------------
# Command lines: what is asked for is what the parser reads
# ------------------------------------------------------------------------------------------------

def test_requested_metrics_are_the_ones_the_parser_reads():
    """A CSV with exactly the requested metrics parses into a full count; leaving out any one
    tensor family column is caught, and no parent metric is ever added to the families."""
    cmd = ncu.profile_command("/x/ncu", "/tmp/rep", ncu.child_command("gemm", {"n": 64}),
                              ncu.all_metrics())
    requested = cmd[cmd.index("--metrics") + 1].split(",")
    text = raw_csv([("k", "", 10, 10)])
    row = ncu.parse_raw_csv(text)[0]
    assert sorted(row.metrics) == sorted(requested)
    f = ncu.kernel_flops(row)
    assert f["tensor"] == 10 and f["tensor_totals"]["bf16"] == 10  # the parent is read, not added
    for fam in ncu.TENSOR_FAMILIES.values():
        partial = ncu.KernelRow("0", "k", "", {m: 1.0 for m in requested if m != fam})
        with pytest.raises(CounterError, match="no column for"):
            ncu.kernel_flops(partial)


def test_child_command_runs_the_module_main():
    """The child command line is a valid call of this module's main (parsed, not run)."""
    child = ncu.child_command("step", {"batch": 2})
    assert child[1:3] == ["-m", "sixn.bench.counters.ncu"]
    parsed = {}

    def fake_step(spec):
        parsed.update(spec)

    import sixn.bench.counters.ncu as mod
    real = mod._child_step
    mod._child_step = fake_step
    try:
        assert ncu.main(child[3:]) == 0
    finally:
        mod._child_step = real
    assert parsed == {"batch": 2}


# ------------------------------------------------------------------------------------------------
# Real output recorded on a GPU
# ------------------------------------------------------------------------------------------------

RECORDED = sorted(DATA.glob("ncu_*.csv")) if DATA.exists() else []


@pytest.mark.skipif(not RECORDED, reason="no ncu output recorded in tests/data yet: on a GPU run "
                                         "`sixn validate --counter ncu --record-fixtures tests/data`")
@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_ncu_parser_on_recorded_output(path):
    meta = json.loads(path.with_suffix(".json").read_text())
    s = ncu.summarize(ncu.parse_raw_csv(path.read_text()))
    assert s["kernels"] > 0
    assert all(c["ok"] for c in s["family_check"].values())
    if meta["kind"] == "gemm":
        assert abs(s["total"] / (2 * meta["n"] ** 3) - 1) <= ncu.GEMM_CHECK_TOL
    else:
        cfg = GPTConfig.from_dict(meta["config"])
        spec = exec_spec(cfg, meta["batch"], meta["seq_len"], counters.base.DTYPES[meta["dtype"]],
                         "cuda")
        ex = executed(cfg, meta["batch"], meta["seq_len"], spec)
        for g, v in ex.by_group().items():
            if g != "other":
                assert abs(s["by_group"][g] - v) <= 0.01 * v, g
        assert abs(s["total"] / ex.matmul_total - 1) <= 0.01


@pytest.mark.gpu
def test_ncu_counts_a_real_step(tmp_path):
    """On a GPU with ncu: the self-check and one small step, recorded into a temporary folder (copy
    them into tests/data deliberately with `python -m sixn.bench.counters.ncu fixtures`). Skipped,
    with the reason, where ncu cannot read the counters."""
    from sixn.bench.commands.validate import run_validate
    try:
        res = run_validate([(2, 64, 64, 256)], counter="ncu", out_dir=tmp_path, plots=False,
                           progress=None, dtype="bfloat16")
    except ncu.NcuUnavailable as e:
        pytest.skip(f"ncu cannot count on this machine ({e.reason}): {e}")
    assert abs(res["gemm_self_check"]["rel_error"]) <= ncu.GEMM_CHECK_TOL
    assert not res["refused"], res["refused"]
    assert abs(res["rows"][0]["measured_over_analytic"] - 1) <= 0.01
    written = ncu.record_fixtures(tmp_path, tmp_path / "fixtures")
    assert len(written) == 4 and all(os.path.getsize(p) > 0 for p in written)
