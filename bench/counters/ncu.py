"""The `ncu` counter: executed FLOPs of one training step from Nsight Compute hardware counters.

How:
1. A child process (`python -m sixn.bench.counters.ncu step ...`) builds the model on the GPU, runs warm-up steps
   (autotuning, compilation and cuBLAS heuristics happen there), then one step inside the NVTX
   range "train_step", with an NVTX range around each block's modules: sixn_qkv (attn.qkv),
   sixn_attention (attn, around the products between its linears), sixn_project (attn.proj) and
   sixn_feedforward (mlp), pushed by forward and full-backward module hooks. The backward runs on
   autograd worker threads, so ranges are process-scoped (--nvtx-push-pop-scope process).
2. ncu profiles every kernel in that range (--replay-mode kernel collects SASS metrics for JIT
   Triton kernels too; --clock-control none leaves clocks alone) and the report is exported with
   `ncu -i REP --csv --page raw --print-units base`: one row per kernel after a units row.
3. Per kernel: tensor-core FLOPs = the sum over instruction families, wgmma (hgmma) and mma.sync
   (hmma), for bf16, fp16 and tf32 sources, dense (sparsity off); the per-type parents
   (sm__ops_path_tensor_src_*) are read only to check that the families add up to them, never
   added. CUDA-core FLOPs = 2 ffma + fadd + fmul + 4 hfma + 2 hadd + 2 hmul (thread instructions;
   the half-precision ones are counted as packed pairs, HFMA2 / HADD2 / HMUL2). MUFU (exp2, rcp,
   ...) thread instructions are reported apart and not counted as FLOPs.
4. Each kernel goes to the group of the innermost sixn_ range it ran in; a kernel outside every
   block range with tensor-core work is the de-embedding (the head's F.linear, forward and
   backward, is the only matmul outside the blocks); other kernels outside go to "other".

Before a step is trusted, a bf16 torch.mm of 4096^3 is profiled the same way and must read
2 * 4096^3 FLOPs within 1% (gemm_self_check). The caller runs it once and passes its result to
each count (count_step_ncu(self_check=...)); nothing is cached between calls.

Errors name the problem and what to do. Two kinds:
- NcuUnavailable: ncu cannot count on this machine at all: not installed, no CUDA GPU, counters
  not permitted (ERR_NVGPUCTRPERM), or the profiler library did not load (LibraryNotLoaded, seen
  where the GPU is reached through a sandboxed kernel). Its `reason` names which; callers fall
  back to another counter or skip, saying so.
- NcuRefused: ncu ran, but its output fails a check (the GEMM self-check, families against their
  parent metric, a group of the step with no tensor-core FLOPs). Its `csv` keeps the raw CSV that
  was refused, so the recording is never lost; callers save it.
Nothing falls back to an analytic number.

The CSV parser (parse_raw_csv) and attribution (summarize) are pure functions of the CSV text.
record_fixtures copies recorded CSVs (a `sixn validate --counter ncu` folder) into tests/data,
where the CPU tests of the parser read them (`python -m sixn.bench.counters.ncu fixtures SRC DEST`).
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sixn.model.flops import EXACT_GEMM, GROUPS

from .base import DTYPES, CounterError, StepCount, build_step, dtype_name

class NcuUnavailable(CounterError):
    """ncu cannot count on this machine; `reason` is one of REASONS."""

    REASONS = ("no-cuda", "not-installed", "ERR_NVGPUCTRPERM", "LibraryNotLoaded", "profiler-init")

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class NcuRefused(CounterError):
    """ncu ran but its output failed a check; `csv` is the refused raw CSV (kept by the caller)."""

    def __init__(self, message: str, csv_text: str, log: str = ""):
        super().__init__(message)
        self.csv = csv_text
        self.log = log


# ------------------------------------------------------------------------------------------------
# Metrics (Hopper / GH100 names; one multiply-add = 2 FLOPs in the sm__ops_path_tensor_* metrics)
# ------------------------------------------------------------------------------------------------

TENSOR_FAMILIES: dict[str, str] = {  # "<dtype>/<path>" -> metric; summed, never with a parent
    "bf16/wgmma": "sm__ops_path_tensor_op_hgmma_src_bf16_dst_fp32_sparsity_off.sum",
    "bf16/mma": "sm__ops_path_tensor_op_hmma_src_bf16_dst_fp32_sparsity_off.sum",
    "fp16/wgmma": "sm__ops_path_tensor_op_hgmma_src_fp16_sparsity_off.sum",
    "fp16/mma_acc32": "sm__ops_path_tensor_op_hmma_src_fp16_dst_fp32_sparsity_off.sum",
    "fp16/mma_acc16": "sm__ops_path_tensor_op_hmma_src_fp16_dst_fp16_sparsity_off.sum",
    "tf32/wgmma": "sm__ops_path_tensor_op_hgmma_src_tf32_dst_fp32_sparsity_off.sum",
    "tf32/mma": "sm__ops_path_tensor_op_hmma_src_tf32_dst_fp32_sparsity_off.sum",
}
TENSOR_TOTALS: dict[str, str] = {  # parents, read only to check the families against them
    "bf16": "sm__ops_path_tensor_src_bf16_dst_fp32.sum",
    "fp16": "sm__ops_path_tensor_src_fp16.sum",
    "tf32": "sm__ops_path_tensor_src_tf32_dst_fp32.sum",
}
CUDA_CORE_WEIGHTS: dict[str, int] = {"ffma": 2, "fadd": 1, "fmul": 1, "hfma": 4, "hadd": 2, "hmul": 2}
CUDA_CORE: dict[str, str] = {k: f"smsp__sass_thread_inst_executed_op_{k}_pred_on.sum"
                             for k in CUDA_CORE_WEIGHTS}
MUFU = "smsp__sass_thread_inst_executed_op_mufu_pred_on.sum"
DURATION = "gpu__time_duration.sum"

STEP_RANGE = "train_step"
# NVTX range name -> group; qkv / project / feedforward are innermost, attention encloses qkv/project
RANGE_GROUPS = {"sixn_qkv": "qkv", "sixn_project": "project", "sixn_feedforward": "feedforward",
                "sixn_attention": "attention"}
GEMM_CHECK_N = 4096
GEMM_CHECK_TOL = 0.01
NCU_TIMEOUT_S = 1800


def all_metrics() -> list[str]:
    return [*TENSOR_FAMILIES.values(), *TENSOR_TOTALS.values(), *CUDA_CORE.values(), MUFU, DURATION]


# ------------------------------------------------------------------------------------------------
# Environment and command lines
# ------------------------------------------------------------------------------------------------

NSIGHT_GLOB = "/opt/nvidia/nsight-compute/*/ncu"  # standalone Nsight Compute installs


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def ncu_path() -> str:
    """The ncu executable: $SIXN_NCU, else `ncu` on PATH, else $CUDA_HOME/bin/ncu (default
    /usr/local/cuda), else the newest /opt/nvidia/nsight-compute/<version>/ncu."""
    env = os.environ.get("SIXN_NCU")
    if env:
        if not _executable(env):
            raise NcuUnavailable("not-installed", f"SIXN_NCU={env!r} is not an executable file; "
                                 f"point it at ncu (e.g. /usr/local/cuda/bin/ncu) or unset it")
        return env
    found = shutil.which("ncu")
    if found:
        return found
    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    candidates = [os.path.join(cuda_home, "bin", "ncu"), *sorted(glob.glob(NSIGHT_GLOB), reverse=True)]
    for candidate in candidates:
        if _executable(candidate):
            return candidate
    raise NcuUnavailable(
        "not-installed",
        "Nsight Compute (ncu) is not installed or not on PATH, so the ncu counter cannot run. "
        "Install Nsight Compute (it ships with the CUDA toolkit as bin/ncu, or as the "
        "nsight-compute package), put it on PATH or set SIXN_NCU=/path/to/ncu; or use "
        "the dispatch or interpreter counter, which need no GPU tools.")


def check_environment() -> str:
    """ncu's path, after checking that ncu exists and a CUDA GPU is visible (NcuUnavailable if
    not). Whether ncu may read the counters shows only when it profiles (check_ncu_output)."""
    if not torch.cuda.is_available():
        raise NcuUnavailable(
            "no-cuda",
            "the ncu counter needs an NVIDIA GPU, and no CUDA device is visible here "
            "(torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU and a "
            "CUDA build of torch, or count with the dispatch or interpreter counter on this one.")
    return ncu_path()


def profile_command(ncu: str, report: str | Path, child: list[str], metrics: list[str],
                    nvtx_range: str = STEP_RANGE) -> list[str]:
    """ncu command line profiling every kernel inside the push/pop NVTX range `nvtx_range`."""
    return [ncu, "--target-processes", "all",
            "--nvtx", "--nvtx-include", f"{nvtx_range}/", "--nvtx-push-pop-scope", "process",
            "--replay-mode", "kernel", "--clock-control", "none",
            "--metrics", ",".join(metrics), "-f", "-o", str(report), *child]


def export_command(ncu: str, report: str | Path) -> list[str]:
    return [ncu, "-i", str(report), "--csv", "--page", "raw", "--print-units", "base"]


def child_command(mode: str, spec: dict) -> list[str]:
    return [sys.executable, "-m", "sixn.bench.counters.ncu", mode, "--spec", json.dumps(spec, sort_keys=True)]


_METRIC_MISSING = re.compile(r"[Ff]ailed to find metric[s]?\s*(?:regex:)?\s*\"?([\w.]+)?")


def check_ncu_output(text: str, chip_hint: str | None = None) -> None:
    """Raise the error ncu's output shows, if any: NcuUnavailable when ncu cannot read counters on
    this machine (permission, profiler library), CounterError for the others."""
    if "ERR_NVGPUCTRPERM" in text:
        raise NcuUnavailable(
            "ERR_NVGPUCTRPERM",
            "ncu may not read the GPU's performance counters (ERR_NVGPUCTRPERM): profiling is "
            "restricted to admin users on this machine. Run sixn as root (sudo -E env "
            "PATH=$PATH sixn ...), or let all users profile by loading the nvidia driver with "
            "NVreg_RestrictProfilingToAdminUsers=0 "
            "(https://developer.nvidia.com/ERR_NVGPUCTRPERM).")
    if "LibraryNotLoaded" in text:
        raise NcuUnavailable(
            "LibraryNotLoaded",
            "ncu could not load its profiler library on this machine (LibraryNotLoaded), so it "
            "cannot read the GPU's counters here. This was seen where the GPU is reached through a "
            "sandboxed kernel (gVisor); ncu works on a machine with direct driver access. Use the "
            f"dispatch counter here. ncu said: {_error_lines(text)}")
    if "Failed to initialize the profiler" in text:
        raise NcuUnavailable("profiler-init", "ncu could not initialise its profiler on this "
                             f"machine, so it cannot read counters here. ncu said: {_error_lines(text)}")
    m = _METRIC_MISSING.search(text)
    if m:
        chip = chip_hint or "<chip>"
        raise CounterError(f"this GPU does not have the metric {m.group(1) or '(see ncu output)'} that the "
                  f"ncu counter reads (its names are for Hopper, GH100). List the tensor-core "
                  f"metrics this chip has with: ncu --query-metrics --chips {chip} "
                  f"--query-metrics-mode suffix --metrics sm__ops_path_tensor; ncu said: "
                  f"{_error_lines(text)}")
    if "==ERROR==" in text:
        raise CounterError(f"ncu failed: {_error_lines(text)}")


def _error_lines(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "==ERROR==" in ln]
    return " | ".join(lines[:5]) or text.strip()[-500:]


# ------------------------------------------------------------------------------------------------
# Parsing (pure functions of ncu's CSV text)
# ------------------------------------------------------------------------------------------------

@dataclass
class KernelRow:
    id: str
    name: str
    nvtx: str                        # every NVTX column of the row, joined
    metrics: dict[str, float | None]  # metric -> value in base units (None: n/a)
    units: dict[str, str] = field(default_factory=dict)


_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BASE_UNITS = ("inst", "flop", "byte", "cycle", "ns", "us", "ms", "s", "warp", "thread", "")


def _unit_scale(unit: str) -> float:
    u = unit.strip()
    if u in _BASE_UNITS or not u:
        return 1.0
    if u[0] in _PREFIX and u[1:] in _BASE_UNITS:
        return _PREFIX[u[0]]
    return 1.0


def _number(text: str) -> float | None:
    t = (text or "").strip().replace(",", "")
    if t in ("", "n/a", "N/A", "nan"):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def parse_raw_csv(text: str) -> list[KernelRow]:
    """Rows of `ncu -i REP --csv --page raw`: the header, a units row, then one row per kernel.
    Lines ncu prints around the table (==PROF==, ==WARNING==, ...) are skipped; thousands
    separators are stripped; prefixed units (Kinst, Mflop ...) are scaled to base units."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("==")]
    if not lines:
        raise ValueError("ncu CSV is empty: no kernel was profiled (check the NVTX range filter)")
    table = list(csv.reader(io.StringIO("\n".join(lines))))
    header = table[0]
    if "Kernel Name" not in header or "ID" not in header:
        raise ValueError(f"not an ncu raw-page CSV: header has no 'ID' / 'Kernel Name' columns "
                         f"({header[:6]}...)")
    body = table[1:]
    units: dict[str, str] = {}
    if body and not body[0][header.index("ID")].strip():
        units = dict(zip(header, body[0]))
        body = body[1:]
    nvtx_cols = [h for h in header if "Push/Pop_Range" in h or "Start/Stop_Range" in h
                 or h.upper().startswith("NVTX")]
    metric_cols = [h for h in header if re.match(r"^[a-z0-9]+__", h)]
    rows = []
    for r in body:
        if len(r) != len(header):
            raise ValueError(f"ncu CSV row has {len(r)} fields, header has {len(header)}: {r[:3]}")
        d = dict(zip(header, r))
        metrics = {}
        for m in metric_cols:
            v = _number(d[m])
            metrics[m] = None if v is None else v * _unit_scale(units.get(m, ""))
        rows.append(KernelRow(d["ID"], d["Kernel Name"], " | ".join(d[c] for c in nvtx_cols),
                              metrics, {m: units.get(m, "") for m in metric_cols}))
    return rows


def group_of_kernel(nvtx: str, tensor_flops: float) -> str:
    """The group of a kernel from the NVTX ranges it ran in (innermost sixn_ range wins)."""
    found = set(re.findall(r"sixn_[a-z]+", nvtx))
    for rng in ("sixn_qkv", "sixn_project", "sixn_feedforward", "sixn_attention"):
        if rng in found:
            return RANGE_GROUPS[rng]
    return "de-embed" if tensor_flops > 0 else "other"


def kernel_flops(row: KernelRow, required: list[str] | None = None) -> dict:
    """Tensor-core FLOPs by family, their sum, CUDA-core FLOPs, MUFU instructions of one kernel."""
    required = list(TENSOR_FAMILIES.values()) if required is None else required
    missing = [m for m in required if m not in row.metrics]
    if missing:
        raise CounterError(f"the ncu CSV has no column for {', '.join(missing)}: this GPU (or "
                               f"ncu version) does not provide it; list the metrics it has with "
                               f"ncu --query-metrics --query-metrics-mode suffix --metrics "
                               f"sm__ops_path_tensor")
    fam = {k: int(round(row.metrics.get(m) or 0.0)) for k, m in TENSOR_FAMILIES.items()
           if m in row.metrics}
    totals = {k: int(round(row.metrics.get(m) or 0.0)) for k, m in TENSOR_TOTALS.items()
              if m in row.metrics}
    cuda = {k: int(round(row.metrics.get(m) or 0.0)) for k, m in CUDA_CORE.items() if m in row.metrics}
    return {
        "tensor_by_family": fam,
        "tensor": sum(fam.values()),
        "tensor_totals": totals,
        "cuda_core": sum(CUDA_CORE_WEIGHTS[k] * v for k, v in cuda.items()),
        "cuda_core_inst": cuda,
        "mufu_inst": int(round(row.metrics.get(MUFU) or 0.0)),
        "duration_ns": row.metrics.get(DURATION),
    }


def family_check(by_family: dict[str, int], totals: dict[str, int], rel: float = 1e-3) -> dict:
    """Families of each dtype against their parent metric: {dtype: (families, parent, ok)}."""
    out = {}
    for dt, parent in totals.items():
        fams = sum(v for k, v in by_family.items() if k.split("/")[0] == dt)
        ok = abs(fams - parent) <= rel * max(parent, 1)
        out[dt] = {"families": fams, "parent": parent, "ok": ok}
    return out


def summarize(rows: list[KernelRow]) -> dict:
    """Per-kernel FLOPs and their attribution to groups, from parsed ncu rows."""
    by_group = {g: 0 for g in GROUPS}
    cuda_by_group = {g: 0 for g in GROUPS}
    by_kernel = []
    fam_total: dict[str, int] = {}
    parent_total: dict[str, int] = {}
    mufu = 0
    for r in rows:
        f = kernel_flops(r)
        g = group_of_kernel(r.nvtx, f["tensor"])
        by_group[g] += f["tensor"]
        cuda_by_group[g] += f["cuda_core"]
        mufu += f["mufu_inst"]
        for k, v in f["tensor_by_family"].items():
            fam_total[k] = fam_total.get(k, 0) + v
        for k, v in f["tensor_totals"].items():
            parent_total[k] = parent_total.get(k, 0) + v
        by_kernel.append({"name": r.name, "id": r.id, "group": g, "flops": f["tensor"],
                          "cuda_core_flops": f["cuda_core"], "mufu_inst": f["mufu_inst"],
                          "tensor_by_family": f["tensor_by_family"], "nvtx": r.nvtx,
                          "duration_ns": f["duration_ns"]})
    return {"total": sum(by_group.values()), "by_group": by_group, "by_kernel": by_kernel,
            "cuda_core_by_group": cuda_by_group, "cuda_core_total": sum(cuda_by_group.values()),
            "mufu_inst": mufu, "tensor_by_family": fam_total,
            "family_check": family_check(fam_total, parent_total), "kernels": len(rows)}


# ------------------------------------------------------------------------------------------------
# Running ncu
# ------------------------------------------------------------------------------------------------

def _chip_name() -> str | None:
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return {(9, 0): "gh100", (8, 0): "ga100", (8, 9): "ad102", (8, 6): "ga102"}.get((major, minor))


def profile(child: list[str], metrics: list[str], workdir: str | Path,
            nvtx_range: str = STEP_RANGE) -> tuple[str, str]:
    """Run `child` under ncu and export the raw CSV: (csv text, ncu's log)."""
    ncu = check_environment()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "profile"
    cmd = profile_command(ncu, report, child, metrics, nvtx_range)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=NCU_TIMEOUT_S, env=env,
                       cwd=str(Path(__file__).resolve().parent.parent))
    log = p.stdout + p.stderr
    check_ncu_output(log, _chip_name())
    if p.returncode != 0:
        raise CounterError(f"ncu exited with {p.returncode} while profiling {' '.join(child)}: "
                               f"{log.strip()[-1500:]}")
    rep = report.with_suffix(".ncu-rep")
    if not rep.exists():
        raise CounterError(f"ncu wrote no report ({rep}); it profiled no kernel inside the "
                               f"NVTX range {nvtx_range!r}. ncu said: {log.strip()[-800:]}")
    e = subprocess.run(export_command(ncu, rep), capture_output=True, text=True,
                       timeout=NCU_TIMEOUT_S)
    check_ncu_output(e.stdout + e.stderr, _chip_name())
    if e.returncode != 0:
        raise CounterError(f"ncu export failed ({e.returncode}): {e.stderr.strip()[-800:]}")
    return e.stdout, log


def _summarize_or_refuse(text: str, log: str, what: str) -> dict:
    """summarize(parse_raw_csv(text)), or NcuRefused keeping `text` when the CSV cannot be read."""
    try:
        return summarize(parse_raw_csv(text))
    except (ValueError, CounterError) as e:
        raise NcuRefused(f"the ncu CSV of {what} could not be read: {e}", text, log) from None


def gemm_self_check(n: int = GEMM_CHECK_N, workdir: str | Path | None = None) -> dict:
    """Profile one bf16 n^3 torch.mm; the tensor metric must read 2 n^3 within 1% (NcuRefused,
    with the CSV, if not). Returns the check with its raw CSV under "csv"."""
    with tempfile.TemporaryDirectory(prefix="sixn-ncu-") as tmp:
        text, log = profile(child_command("gemm", {"n": n}), all_metrics(), workdir or tmp)
    s = _summarize_or_refuse(text, log, f"the {n}^3 GEMM self-check")
    expected = EXACT_GEMM.forward_flops(n, n, n)  # 2 n^3
    rel = s["total"] / expected - 1.0
    out = {"n": n, "expected": expected, "measured": s["total"], "rel_error": rel,
           "tensor_by_family": s["tensor_by_family"], "family_check": s["family_check"],
           "kernels": [k["name"] for k in s["by_kernel"]], "csv": text}
    if abs(rel) > GEMM_CHECK_TOL or not all(c["ok"] for c in s["family_check"].values()):
        raise NcuRefused(
            f"ncu self-check failed: a bf16 {n}x{n}x{n} torch.mm read {s['total']:,} tensor-core "
            f"FLOPs, expected 2*{n}^3 = {expected:,} ({rel:+.2%}); families {s['tensor_by_family']}, "
            f"check against parents {s['family_check']}. The tensor metrics do not mean what sixn "
            f"assumes on this GPU, so no step is measured.", text, log)
    return out


def count_step_ncu(cfg, batch: int, seq_len: int, device: str, dtype: torch.dtype,
                   self_check: dict | None = None):
    """The ncu counter behind bench.counters.count_step. self_check: a passed gemm_self_check()
    (run here when None). A count that fails a check raises NcuRefused with the raw CSV."""
    check_environment()
    check = gemm_self_check() if self_check is None else self_check
    spec = {"config": cfg.to_dict(), "batch": batch, "seq_len": seq_len,
            "dtype": dtype_name(dtype), "warmup": 2}
    with tempfile.TemporaryDirectory(prefix="sixn-ncu-") as tmp:
        text, log = profile(child_command("step", spec), all_metrics(), tmp)
    s = _summarize_or_refuse(text, log, "the training step")
    if s["kernels"] == 0 or s["total"] == 0:
        raise NcuRefused(f"ncu measured no tensor-core FLOPs in the step ({s['kernels']} "
                         f"kernels profiled); check that the model runs on the GPU in "
                         f"{dtype_name(dtype)}", text, log)
    bad = {k: v for k, v in s["family_check"].items() if not v["ok"]}
    if bad:
        raise NcuRefused(f"tensor-core families do not add up to their parent metric: {bad}", text, log)
    empty = [g for g in ("qkv", "attention", "project", "feedforward", "de-embed")
             if s["by_group"][g] == 0]
    if empty:
        raise NcuRefused(
            f"ncu measured no tensor-core FLOPs for {', '.join(empty)}: the kernels of these NVTX "
            f"ranges (sixn_*, nested in {STEP_RANGE!r}) were not profiled or not attributed. Check "
            f"that this ncu version's --nvtx-include '{STEP_RANGE}/' includes nested push/pop "
            f"ranges, and that the NVTX column of the raw CSV names the ranges; "
            f"{s['kernels']} kernels were profiled", text, log)
    extra = {"cuda_core_flops": s["cuda_core_total"], "cuda_core_by_group": s["cuda_core_by_group"],
             "mufu_inst": s["mufu_inst"], "tensor_by_family": s["tensor_by_family"],
             "kernels": s["kernels"],
             "gemm_self_check": {k: v for k, v in check.items() if k != "csv"}}
    raw = {"csv": text, "ncu_log_tail": log[-4000:], "config": cfg.to_dict(),
           "command": " ".join(child_command("step", spec))}
    return StepCount("ncu", cfg.backend, batch, seq_len, device, dtype_name(dtype), s["total"],
                     s["by_group"], s["by_kernel"], raw, extra)


# ------------------------------------------------------------------------------------------------
# Recorded output as test fixtures
# ------------------------------------------------------------------------------------------------

GEMM_CHECK_FILE = "gemm_self_check"   # <folder>/gemm_self_check.csv + .json, written by sixn validate


def record_fixtures(src: str | Path, dest: str | Path) -> list[Path]:
    """Copy the ncu CSVs of a `sixn validate --counter ncu` folder into `dest` (tests/data), each
    with the small JSON the parser tests read: ncu_gemm_<n>.csv/.json from the self-check and
    ncu_step_<shape>_<backend>.csv/.json from each counted shape (raw_<shape>.csv/.json).
    Returns the files written; ValueError when `src` holds no ncu recording."""
    src, dest = Path(src), Path(dest)
    written: list[Path] = []

    def put(name: str, csv_text: str, meta: dict) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{name}.csv").write_text(csv_text)
        (dest / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        written.extend([dest / f"{name}.csv", dest / f"{name}.json"])

    check = src / f"{GEMM_CHECK_FILE}.json"
    if check.exists() and (src / f"{GEMM_CHECK_FILE}.csv").exists():
        meta = json.loads(check.read_text())
        put(f"ncu_gemm_{meta['n']}", (src / f"{GEMM_CHECK_FILE}.csv").read_text(),
            {"kind": "gemm", "n": meta["n"], "device": meta.get("provenance", {}).get("device")})
    for raw_json in sorted(src.glob("raw_*.json")):
        rec = json.loads(raw_json.read_text())
        if rec.get("counter") != "ncu" or not raw_json.with_suffix(".csv").exists():
            continue
        if "config" not in rec.get("raw", {}):
            raise ValueError(f"{raw_json} has no raw.config: recorded by an older sixn; record again")
        shape = raw_json.stem[len("raw_"):]
        put(f"ncu_step_{shape}_{rec['backend']}", raw_json.with_suffix(".csv").read_text(),
            {"kind": "step", "config": rec["raw"]["config"], "batch": rec["batch"],
             "seq_len": rec["seq_len"], "dtype": rec["dtype"],
             "device": rec.get("provenance", {}).get("device")})
    if not written:
        raise ValueError(f"{src} holds no ncu recording (no {GEMM_CHECK_FILE}.csv and no "
                         f"raw_<shape>.csv of the ncu counter); run `sixn validate --counter ncu "
                         f"--out {src}` on a GPU first")
    return written


# ------------------------------------------------------------------------------------------------
# The child process that ncu profiles
# ------------------------------------------------------------------------------------------------

def _nvtx_module_ranges(model) -> list:
    """Forward and full-backward hooks pushing sixn_* NVTX ranges around each block's modules."""
    nvtx = torch.cuda.nvtx
    handles = []

    # Each hook must return None: a value returned by a hook replaces the module's input, output
    # or gradients (range_push / range_pop return the stack depth).
    def push(name):
        def hook(*_):
            nvtx.range_push(name)
        return hook

    def pop(*_):
        nvtx.range_pop()

    def add(module, name):
        handles.append(module.register_forward_pre_hook(push(name)))
        handles.append(module.register_forward_hook(pop))
        handles.append(module.register_full_backward_pre_hook(push(name)))
        handles.append(module.register_full_backward_hook(pop))

    for block in model.blocks:
        add(block.attn, "sixn_attention")
        add(block.attn.qkv, "sixn_qkv")
        add(block.attn.proj, "sixn_project")
        add(block.mlp, "sixn_feedforward")
    return handles


def _child_step(spec: dict) -> None:
    from sixn.model.config import GPTConfig
    cfg = GPTConfig.from_dict(spec["config"])
    if cfg.backend == "triton":
        import sixn.kernels  # noqa: F401
    model, step = build_step(cfg, spec["batch"], spec["seq_len"], "cuda", DTYPES[spec["dtype"]])
    for _ in range(int(spec.get("warmup", 2))):
        step()
        model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    _nvtx_module_ranges(model)
    torch.cuda.nvtx.range_push(STEP_RANGE)
    step()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()


def _child_gemm(spec: dict) -> None:
    n = int(spec["n"])
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        torch.mm(a, b)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(STEP_RANGE)
    torch.mm(a, b)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sixn.bench.counters.ncu",
                                description="the child processes profiled by the ncu counter "
                                            "(step, gemm), and `fixtures SRC DEST`: copy the ncu "
                                            "CSVs recorded in a sixn validate folder into tests/data")
    p.add_argument("mode", choices=("step", "gemm", "fixtures"))
    p.add_argument("paths", nargs="*", help="fixtures: SRC (a validate folder) and DEST")
    p.add_argument("--spec", help="JSON (step, gemm)")
    a = p.parse_args(argv)
    if a.mode == "fixtures":
        if len(a.paths) != 2:
            p.error("fixtures needs SRC and DEST, e.g. fixtures results/report-gpu/validate tests/data")
        try:
            for path in record_fixtures(*a.paths):
                print(path)
        except ValueError as e:
            print(f"{p.prog}: error: {e}", file=sys.stderr)
            return 2
        return 0
    if not a.spec:
        p.error(f"{a.mode} needs --spec")
    spec = json.loads(a.spec)
    (_child_step if a.mode == "step" else _child_gemm)(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
