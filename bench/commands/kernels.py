"""`sixn kernels`: TFLOP/s of sixn's Triton kernels against PyTorch's, on a CUDA GPU.

Attention (kernels.attention vs torch scaled_dot_product_attention with each backend this GPU has:
flash, cuDNN, memory-efficient, forced with torch.nn.attention.sdpa_kernel): forward, backward and
forward + backward, bf16, T from 512 to 16k at a constant number of tokens per batch (B = tokens / T,
default 16k) and a constant width (H = hidden / D, default 2048), D 64 and 128, causal and not.
MLP up-projection (kernels.linear_gelu vs torch F.linear + F.gelu(tanh)): forward and forward +
backward for GPT-like shapes (M = tokens, K = d_model, N = 4 d_model).

TFLOP/s use model FLOPs from model.flops: attention in the FlashAttention convention
(attention_model_flops: forward 4 B H T^2 D, halved when causal; backward 2.5 x forward), the MLP as
its GEMMs (2 M N K forward, 3x that forward + backward). Triton rows also carry the executed count
of the launched tiles (kernels.attention.attention_exec, kernels.mlp.linear_gelu_exec) as
tflops_executed. Every Triton case is first checked against PyTorch (output and gradients, relative
to the largest reference value) and not timed if it disagrees. Times are medians with 20/80
quantiles from bench.timing.bench (triton.testing.do_bench on a GPU); forward alone is timed under
torch.no_grad(). Arithmetic intensity = model FLOPs / minimum bytes moved (each input read and each
output written once), for the roofline.

Rows are appended to results/kernels/kernels.csv with provenance (and printed as a JSON list with
--json); the summary with the triton / baseline ratios goes to results/kernels/kernels.json and the
figures (attention_<mode>.png per mode, mlp.png, roofline.png) to results/kernels/.

Fail-soft: every case is measured on its own; an error in one (a Triton CompilationError,
OutOfResources or PTXASError, a CUDA error, a mismatch) becomes that case's error rows and the
others go on. Rows are written the moment a case is done (kernels.csv appended, kernels.json
rewritten with "complete": false until the end), so a kill loses at most the case in flight.
--time-budget S starts no new case after S seconds; the skipped cases are listed in kernels.json.

--check: correctness only, no timing: forward and backward of the Triton kernels against PyTorch
references (bf16, fp16 and fp32) on awkward shapes: ragged sequence lengths and GEMM sizes, padded
head dims, short sequences, small M. Rows go to check.csv / check.json in the same folder.

--aot sm_90: no GPU needed. Compiles every kernel configuration sixn launches on Hopper with
Triton's own compiler and bundled ptxas (bench.aot) and writes one row each (kernel, config,
dtype, shape class, ok, registers, spill bytes, shared memory, warps, stages) to
aot_sm_90.csv / aot_sm_90.json; --python runs the compile with another environment's Triton.

GPU only (timing and --check): on a CPU the kernels run in the Triton interpreter, far too slow to
time; the command exits with status 2 there (the measuring functions below still run on CPU
tensors, for tests).

Examples:
  sixn kernels
  sixn kernels --family attention --head-dim 128 --seq-len 2048 --seq-len 8192 --causal causal
  sixn kernels --quick --json --time-budget 90
  sixn kernels --check
  sixn kernels --aot sm_90 --json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from sixn.bench import aot, argtypes
from sixn.bench.errors import CLIError
from sixn.bench.timing import bench
from sixn.kernels.runtime import DTYPES, dtype_name
from sixn.model.flops import ATTENTION_MODES, EXACT_GEMM, attention_model_flops

ATTN_PROVIDERS = ("triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math")
DEFAULT_ATTN_PROVIDERS = ("triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient")
MLP_PROVIDERS = ("triton", "torch")
MLP_MODES = ("fwd", "fwd+bwd")
SEQ_LENS = (512, 1024, 2048, 4096, 8192, 16384)
QUICK_SEQ_LENS = (512, 2048, 8192)
HEAD_DIMS = (64, 128)
TOKENS = 16384
HIDDEN = 2048
MLP_D_MODELS = (768, 1024, 1536, 2048)
QUICK_MLP_D_MODELS = (768, 1536)
# max |tri - ref| / max |ref| allowed by the correctness check, by dtype
TOLERANCE = {torch.bfloat16: 5e-2, torch.float16: 1e-2, torch.float32: 1e-3}


def _case_errors() -> tuple[type[BaseException], ...]:
    """What a provider's measurement may raise and be recorded as its error: PyTorch's and CUDA's
    RuntimeErrors (out of memory included), failed checks, bad shapes, and Triton's own errors
    (CompilationError, OutOfResources, PTXASError derive from TritonError, not RuntimeError)."""
    errors: tuple[type[BaseException], ...] = (RuntimeError, AssertionError, ValueError)
    try:
        from triton.errors import TritonError
        errors += (TritonError,)
    except ImportError:  # no triton on this platform: nothing of it to catch
        pass
    return errors


CASE_ERRORS = _case_errors()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _progress(msg: str) -> None:
    print(f"[sixn kernels] {msg}", file=sys.stderr, flush=True)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| (inf for NaNs)."""
    d = (a.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    if d != d:
        return float("inf")
    return d / scale if scale > 0 else d


# ------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttnCase:
    B: int
    H: int
    T: int
    D: int
    causal: bool

    @property
    def key(self) -> str:
        return f"B{self.B} H{self.H} T{self.T} D{self.D} {'causal' if self.causal else 'full'}"


def attention_cases(seq_lens, head_dims, causal: tuple[bool, ...], tokens: int = TOKENS,
                    hidden: int = HIDDEN) -> list[AttnCase]:
    """B = tokens / T (at least 1) and H = hidden / D for each (T, D, causal)."""
    out = []
    for D in head_dims:
        if D <= 0 or hidden % D:
            raise ValueError(f"head dim {D} must be positive and divide hidden={hidden}")
        for c in causal:
            for T in seq_lens:
                if T <= 0:
                    raise ValueError(f"sequence length must be positive, got {T}")
                out.append(AttnCase(max(1, tokens // T), hidden // D, T, D, c))
    return out


def _attn_impl(provider: str):
    """(fn(q, k, v, causal), context manager factory forcing the provider's backend)."""
    if provider == "triton":
        from sixn.kernels import attention
        return (lambda q, k, v, c: attention(q, k, v, causal=c)), contextlib.nullcontext
    if provider not in ATTN_PROVIDERS:
        raise ValueError(f"unknown attention provider {provider!r}; supported: {', '.join(ATTN_PROVIDERS)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
               "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
               "sdpa-math": SDPBackend.MATH}[provider]
    return ((lambda q, k, v, c: F.scaled_dot_product_attention(q, k, v, is_causal=c)),
            lambda: sdpa_kernel(backend))


def _attention_exec_flops(case: AttnCase, mode: str, dtype, device) -> int:
    from sixn.kernels.attention import attention_exec
    ex = attention_exec(case.T, case.D, dtype, device)
    fwd = ex.forward_flops(case.B, case.H, case.T, case.D, case.causal)
    bwd = ex.backward_flops(case.B, case.H, case.T, case.D, case.causal)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def _attention_min_bytes(case: AttnCase, mode: str, element_size: int) -> int:
    """Each tensor read or written once: fwd q, k, v, o; bwd q, k, v, o, dO, dq, dk, dv."""
    n = case.B * case.H * case.T * case.D * element_size
    return {"fwd": 4 * n, "bwd": 8 * n, "fwd+bwd": 12 * n}[mode]


def _base_row(family, provider, mode, shape, device_name, dtype) -> dict:
    return {"family": family, "provider": provider, "mode": mode, "shape": shape,
            "device": device_name, "dtype": dtype_name(dtype), "B": None, "H": None, "T": None,
            "D": None, "causal": None, "M": None, "N": None, "K": None, "ms": None, "ms_p20": None,
            "ms_p80": None, "model_flops": None, "tflops": None, "executed_flops": None,
            "tflops_executed": None, "intensity": None, "max_rel_err": None, "error": None}


def _time_rows(rows_by_mode: dict, fns: dict, device, rep_ms: float) -> None:
    for mode, fn in fns.items():
        r = rows_by_mode[mode]
        t = bench(fn, device, rep_ms=rep_ms)
        r.update(ms=t.median_ms, ms_p20=t.p20_ms, ms_p80=t.p80_ms,
                 tflops=r["model_flops"] / (t.median_ms / 1e3) / 1e12)
        if r["executed_flops"] is not None:
            r["tflops_executed"] = r["executed_flops"] / (t.median_ms / 1e3) / 1e12


def measure_attention(case: AttnCase, providers, device, dtype=torch.bfloat16,
                      modes=ATTENTION_MODES, rep_ms: float = 100,
                      device_name: str | None = None) -> list[dict]:
    """Rows (one per provider and mode) for one attention case: check, then time."""
    from sixn.bench.results import device_name as _devname
    for m in modes:
        if m not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {m!r}; supported: {', '.join(ATTENTION_MODES)}")
    dev = torch.device(device)
    name = device_name or _devname(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    shape = (case.B, case.H, case.T, case.D)
    q, k, v = (torch.randn(shape, device=dev, dtype=dtype, generator=gen).requires_grad_()
               for _ in range(3))
    do = torch.randn(shape, device=dev, dtype=dtype, generator=gen)
    # the reference: PyTorch's own choice of SDPA backend
    ref_out = F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)
    ref = (ref_out.detach(), *torch.autograd.grad(ref_out, (q, k, v), do))
    del ref_out
    es = q.element_size()
    rows = []
    for provider in providers:
        by_mode = {}
        for mode in modes:
            r = _base_row("attention", provider, mode, case.key, name, dtype)
            r.update(B=case.B, H=case.H, T=case.T, D=case.D, causal=case.causal,
                     model_flops=attention_model_flops(case.B, case.H, case.T, case.D, case.causal, mode),
                     intensity=attention_model_flops(case.B, case.H, case.T, case.D, case.causal, mode)
                     / _attention_min_bytes(case, mode, es))
            if provider == "triton":
                r["executed_flops"] = _attention_exec_flops(case, mode, dtype, dev)
            by_mode[mode] = r
        rows += by_mode.values()
        fn, ctx = _attn_impl(provider)
        try:
            with ctx():
                out = fn(q, k, v, case.causal)
                got = (out.detach(), *torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
                err = max(rel_err(a, b) for a, b in zip(got, ref))
                for r in by_mode.values():
                    r["max_rel_err"] = err
                del got
                if provider == "triton" and not err <= TOLERANCE[dtype]:
                    raise AssertionError(f"correctness check failed: max rel err {err:.3g} > "
                                         f"{TOLERANCE[dtype]:g} against PyTorch SDPA; not timed")
                fns = {}
                if "fwd" in modes:
                    def fwd():
                        with torch.no_grad():
                            return fn(q, k, v, case.causal)
                    fns["fwd"] = fwd
                if "bwd" in modes:
                    fns["bwd"] = lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True)
                if "fwd+bwd" in modes:
                    fns["fwd+bwd"] = lambda: torch.autograd.grad(fn(q, k, v, case.causal), (q, k, v), do)
                _time_rows(by_mode, fns, dev, rep_ms)
                del out
        except CASE_ERRORS as e:
            msg = _first_line(e)
            if isinstance(e, RuntimeError) and provider != "triton":
                msg = f"backend unavailable here: {msg}"
            for r in by_mode.values():
                if r["ms"] is None:
                    r["error"] = msg[:300]
    return rows


# ------------------------------------------------------------------------------------------------
# MLP up-projection: linear + GELU
# ------------------------------------------------------------------------------------------------

def _mlp_impl(provider: str):
    if provider == "triton":
        from sixn.kernels import linear_gelu
        return lambda x, w, b: linear_gelu(x, w, b)
    if provider == "torch":
        return lambda x, w, b: F.gelu(F.linear(x, w, b), approximate="tanh")
    raise ValueError(f"unknown mlp provider {provider!r}; supported: {', '.join(MLP_PROVIDERS)}")


def _mlp_flops(gemm, M: int, N: int, K: int, mode: str) -> int:
    fwd = gemm.forward_flops(M, N, K)
    return fwd if mode == "fwd" else fwd + gemm.backward_flops(M, N, K)


def measure_mlp(M: int, N: int, K: int, providers, device, dtype=torch.bfloat16,
                modes=MLP_MODES, rep_ms: float = 100, device_name: str | None = None) -> list[dict]:
    """Rows for one (M, N, K) linear + GELU problem: check the triton kernel, then time."""
    from sixn.bench.results import device_name as _devname
    for m in modes:
        if m not in MLP_MODES:
            raise ValueError(f"unknown mlp mode {m!r}; supported: {', '.join(MLP_MODES)}")
    dev = torch.device(device)
    name = device_name or _devname(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(M, K, device=dev, dtype=dtype, generator=gen).requires_grad_()
    w = (torch.randn(N, K, device=dev, dtype=dtype, generator=gen) / K ** 0.5).requires_grad_()
    b = torch.randn(N, device=dev, dtype=dtype, generator=gen).requires_grad_()
    dy = torch.randn(M, N, device=dev, dtype=dtype, generator=gen)
    ref_y = _mlp_impl("torch")(x, w, b)
    ref = (ref_y.detach(), *torch.autograd.grad(ref_y, (x, w, b), dy))
    del ref_y
    es = x.element_size()
    fwd_bytes = (M * K + N * K + N + M * N) * es
    rows = []
    for provider in providers:
        fn = _mlp_impl(provider)
        by_mode = {}
        for mode in modes:
            r = _base_row("mlp", provider, mode, f"{M}x{N}x{K}", name, dtype)
            flops = _mlp_flops(EXACT_GEMM, M, N, K, mode)
            r.update(M=M, N=N, K=K, model_flops=flops,
                     intensity=flops / (fwd_bytes if mode == "fwd" else 3 * fwd_bytes))
            if provider == "triton":
                from sixn.kernels.mlp import linear_gelu_exec
                r["executed_flops"] = _mlp_flops(linear_gelu_exec(M, N, K, dtype, dev), M, N, K, mode)
            by_mode[mode] = r
        rows += by_mode.values()
        try:
            y = fn(x, w, b)
            got = (y.detach(), *torch.autograd.grad(y, (x, w, b), dy))
            err = max(rel_err(a, c) for a, c in zip(got, ref))
            del y, got
            for r in by_mode.values():
                r["max_rel_err"] = err
            if provider == "triton" and not err <= TOLERANCE[dtype]:
                raise AssertionError(f"correctness check failed: max rel err {err:.3g} > "
                                     f"{TOLERANCE[dtype]:g} against torch linear + gelu; not timed")
            fns = {}
            if "fwd" in modes:
                def fwd():
                    with torch.no_grad():
                        return fn(x, w, b)
                fns["fwd"] = fwd
            if "fwd+bwd" in modes:
                fns["fwd+bwd"] = lambda: torch.autograd.grad(fn(x, w, b), (x, w, b), dy)
            _time_rows(by_mode, fns, dev, rep_ms)
        except CASE_ERRORS as e:
            msg = _first_line(e)
            for r in by_mode.values():
                if r["ms"] is None:
                    r["error"] = msg[:300]
    return rows


# ------------------------------------------------------------------------------------------------
# Summary: triton over each baseline
# ------------------------------------------------------------------------------------------------

def ratios(rows: list[dict]) -> list[dict]:
    """triton TFLOP/s over each other provider's, per (family, mode, case); both must be timed."""
    timed = [r for r in rows if r.get("tflops")]
    tri = {(r["family"], r["mode"], r["shape"]): r for r in timed if r["provider"] == "triton"}
    out = []
    for r in timed:
        if r["provider"] == "triton":
            continue
        t = tri.get((r["family"], r["mode"], r["shape"]))
        if t is not None:
            out.append({"family": r["family"], "mode": r["mode"], "shape": r["shape"],
                        "baseline": r["provider"], "triton_tflops": t["tflops"],
                        "baseline_tflops": r["tflops"], "ratio": t["tflops"] / r["tflops"]})
    return out


def format_table(rows: list[dict], ratio_rows: list[dict]) -> str:
    hdr = (f"{'family':<9} {'mode':<7} {'case':<30} {'provider':<15} {'ms':>9} {'[p20, p80]':>19} "
           f"{'TFLOP/s':>8} {'executed':>8} {'rel err':>8}")
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['family']:<9} {r['mode']:<7} {r['shape']:<30} {r['provider']:<15} "
                         f"error: {r['error']}")
            continue
        ex = "-" if r["tflops_executed"] is None else f"{r['tflops_executed']:.4g}"
        lines.append(f"{r['family']:<9} {r['mode']:<7} {r['shape']:<30} {r['provider']:<15} "
                     f"{r['ms']:9.4f} [{r['ms_p20']:8.4f},{r['ms_p80']:8.4f}] {r['tflops']:8.4g} "
                     f"{ex:>8} {r['max_rel_err']:8.1e}")
    lines.append("(TFLOP/s: model FLOPs, FlashAttention convention for attention, GEMM FLOPs for the "
                 "MLP; executed: the tiles the triton kernels launch)")
    if ratio_rows:
        lines += ["", "triton / baseline (TFLOP/s ratio):"]
        for q in ratio_rows:
            lines.append(f"  {q['family']:<9} {q['mode']:<7} {q['shape']:<30} vs {q['baseline']:<15} "
                         f"{q['ratio']:6.2f}x")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Correctness on the GPU (--check): the kernels against float64 PyTorch references
# ------------------------------------------------------------------------------------------------

# In the order they run (a time budget keeps the first): the awkward shapes first (ragged T,
# padded head dims, short sequences, ragged and small GEMMs), attention and MLP alternating, then
# even ones; all in bf16, then fp16, then fp32.
CHECK_CASES = (("attention", AttnCase(2, 4, 1023, 64, True)), ("mlp", (4 * 1023, 3072, 768)),
               ("attention", AttnCase(1, 3, 17, 40, True)), ("mlp", (17, 3072, 768)),
               ("attention", AttnCase(2, 2, 1000, 128, False)), ("mlp", (4096, 128, 32)),
               ("attention", AttnCase(1, 2, 2048, 96, True)), ("mlp", (1000, 160, 40)),
               ("attention", AttnCase(1, 2, 300, 16, False)), ("mlp", (16384, 3072, 768)),
               ("attention", AttnCase(4, 12, 1024, 64, True)))
CHECK_DTYPES = ("bf16", "fp16", "fp32")


def _check_row(family: str, shape: str, dtype: torch.dtype) -> dict:
    return {"family": family, "shape": shape, "dtype": dtype_name(dtype), "max_rel_err": None,
            "worst": None, "tolerance": TOLERANCE[dtype], "ok": False, "error": None}


def _compare(row: dict, got: tuple, ref: tuple, names: tuple[str, ...]) -> dict:
    errs = {n: rel_err(g, r) for n, g, r in zip(names, got, ref)}
    worst = max(errs, key=errs.get)
    row.update(max_rel_err=errs[worst], worst=worst, ok=errs[worst] <= row["tolerance"])
    if not row["ok"]:
        row["error"] = f"{worst}: max rel err {errs[worst]:.3g} > {row['tolerance']:g}"
    return row


def check_attention(case: AttnCase, device, dtype=torch.bfloat16) -> dict:
    """Output and q, k, v gradients of the Triton attention against a float64 reference."""
    from sixn.kernels import attention
    from sixn.kernels.attention import attention_reference
    row = _check_row("attention", case.key, dtype)
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        shape = (case.B, case.H, case.T, case.D)
        q, k, v, do = (torch.randn(shape, device=device, generator=gen).to(dtype) for _ in range(4))
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attention(*ins, causal=case.causal)
        got = (out, *torch.autograd.grad(out, ins, do))
        ref_ins = [t.double().requires_grad_() for t in (q, k, v)]
        ref_out = attention_reference(*ref_ins, causal=case.causal)
        ref = (ref_out, *torch.autograd.grad(ref_out, ref_ins, do.double()))
        return _compare(row, got, ref, ("out", "dq", "dk", "dv"))
    except CASE_ERRORS as e:
        row["error"] = _first_line(e)[:300]
        return row


def check_mlp(M: int, N: int, K: int, device, dtype=torch.bfloat16) -> dict:
    """Output and x, weight, bias gradients of the fused linear + GELU against float64."""
    from sixn.kernels import linear_gelu
    from sixn.kernels.mlp import linear_gelu_reference
    row = _check_row("mlp", f"{M}x{N}x{K}", dtype)
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(M, K, device=device, generator=gen).to(dtype)
        w = (torch.randn(N, K, device=device, generator=gen) / K ** 0.5).to(dtype)
        b = torch.randn(N, device=device, generator=gen).to(dtype)
        dy = torch.randn(M, N, device=device, generator=gen).to(dtype)
        ins = [t.clone().requires_grad_() for t in (x, w, b)]
        y = linear_gelu(*ins)
        got = (y, *torch.autograd.grad(y, ins, dy))
        ref_ins = [t.double().requires_grad_() for t in (x, w, b)]
        ref_y = linear_gelu_reference(*ref_ins)
        ref = (ref_y, *torch.autograd.grad(ref_y, ref_ins, dy.double()))
        return _compare(row, got, ref, ("y", "dx", "dw", "db"))
    except CASE_ERRORS as e:
        row["error"] = _first_line(e)[:300]
        return row


# ------------------------------------------------------------------------------------------------
# Running cases one by one: each on its own, written as it comes, within a time budget
# ------------------------------------------------------------------------------------------------

def _free(device) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def run_cases(items: Iterable, measure: Callable, on_rows: Callable[[list[dict]], None],
              error_rows: Callable[[object, str], list[dict]], label: Callable[[object], str] = str,
              deadline: float | None = None, device="cpu") -> tuple[list[dict], list[str]]:
    """measure(item) -> rows for each item in turn; on_rows(rows) as soon as an item is done.
    Anything an item raises becomes error_rows(item, message) and the next item runs; items not
    started before `deadline` (time.monotonic()) are skipped. Returns (rows, skipped labels)."""
    items = list(items)
    rows: list[dict] = []
    skipped: list[str] = []
    for i, item in enumerate(items):
        if deadline is not None and time.monotonic() > deadline:
            skipped.append(label(item))
            continue
        _progress(f"{i + 1}/{len(items)} {label(item)} ...")
        try:
            got = measure(item)
        except Exception as e:  # one case's failure of any kind must not end the run
            got = error_rows(item, f"case failed: {_first_line(e)}"[:300])
        rows += got
        on_rows(got)
        _free(device)
    if skipped:
        _progress(f"time budget spent: {len(skipped)} cases skipped")
    return rows, skipped


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    ARCHS = aot.ARCHS
    p.add_argument("--check", action="store_true",
                   help="correctness only (GPU): the kernels' forward and backward against float64 "
                        "PyTorch on awkward shapes, bf16 / fp16 / fp32; no timing")
    p.add_argument("--aot", metavar="ARCH", choices=tuple(ARCHS), default=None,
                   help=f"no GPU needed: compile every kernel configuration sixn launches for ARCH "
                        f"({', '.join(ARCHS)}) with Triton's compiler and ptxas; registers, spills, "
                        f"shared memory per configuration")
    p.add_argument("--python", metavar="PATH", default=None, type=argtypes.readable_file,
                   help="--aot: compile with this Python's Triton (another environment)")
    p.add_argument("--subset", choices=("all", "ci"), default="all",
                   help="--aot: every configuration (default) or a representative few")
    p.add_argument("--time-budget", type=argtypes.positive_float, default=None, metavar="S",
                   help="start no new case after S seconds (the skipped ones are listed)")
    p.add_argument("--family", choices=("all", "attention", "mlp"), default="all")
    p.add_argument("--seq-len", type=argtypes.positive_int, action="append", default=None, metavar="T",
                   help=f"attention sequence length, repeatable (default {', '.join(map(str, SEQ_LENS))})")
    p.add_argument("--head-dim", type=argtypes.positive_int, action="append", default=None, metavar="D",
                   help="attention head dim, repeatable (default 64, 128)")
    p.add_argument("--causal", choices=("both", "causal", "non-causal"), default="both")
    p.add_argument("--mode", action="append", default=None, choices=ATTENTION_MODES,
                   help="repeatable (default all; the MLP has fwd and fwd+bwd)")
    p.add_argument("--provider", action="append", default=None, metavar="NAME",
                   help=f"repeatable; attention: {', '.join(ATTN_PROVIDERS)} (default all but "
                        f"sdpa-math); mlp: {', '.join(MLP_PROVIDERS)}")
    p.add_argument("--tokens", type=argtypes.positive_int, default=TOKENS,
                   help=f"tokens per batch, B x T for attention and M for the MLP (default {TOKENS})")
    p.add_argument("--hidden", type=argtypes.positive_int, default=HIDDEN,
                   help=f"attention width H x D (default {HIDDEN})")
    p.add_argument("--mlp-d-model", type=argtypes.positive_int, action="append", default=None, metavar="D",
                   help=f"MLP shapes K = D, N = 4 D, repeatable (default {', '.join(map(str, MLP_D_MODELS))})")
    p.add_argument("--dtype", choices=("bf16", "fp16"), default="bf16")
    p.add_argument("--rep-ms", type=argtypes.positive_float, default=100, help="timing budget per case (ms)")
    p.add_argument("--quick", action="store_true",
                   help=f"fewer cases: T {', '.join(map(str, QUICK_SEQ_LENS))}, MLP d_model "
                        f"{', '.join(map(str, QUICK_MLP_D_MODELS))}")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="output folder (default results/kernels/)")
    p.add_argument("--no-plots", action="store_true")
def _plan(args) -> dict:
    """The cases the flags describe; CLIError for bad flags."""
    fams = ("attention", "mlp") if args.family == "all" else (args.family,)
    provs = args.provider or list(DEFAULT_ATTN_PROVIDERS + tuple(p for p in MLP_PROVIDERS
                                                              if p not in DEFAULT_ATTN_PROVIDERS))
    for p in provs:
        if p not in ATTN_PROVIDERS and p not in MLP_PROVIDERS:
            raise CLIError(f"unknown provider {p!r}; supported: attention {', '.join(ATTN_PROVIDERS)}; "
                           f"mlp {', '.join(MLP_PROVIDERS)}")
    for flag, v in (("--tokens", args.tokens), ("--hidden", args.hidden), ("--rep-ms", args.rep_ms)):
        if v <= 0:
            raise CLIError(f"{flag} must be positive, got {v}")
    modes = args.mode or list(ATTENTION_MODES)
    plan = {"attention": [], "mlp": [], "attn_providers": [p for p in provs if p in ATTN_PROVIDERS],
            "mlp_providers": [p for p in provs if p in MLP_PROVIDERS],
            "attn_modes": modes, "mlp_modes": [m for m in modes if m in MLP_MODES]}
    if "attention" in fams:
        causal = {"both": (True, False), "causal": (True,), "non-causal": (False,)}[args.causal]
        seq = args.seq_len or (QUICK_SEQ_LENS if args.quick else SEQ_LENS)
        try:
            plan["attention"] = attention_cases(seq, args.head_dim or HEAD_DIMS, causal,
                                                args.tokens, args.hidden)
        except ValueError as e:
            raise CLIError(str(e)) from None
    if "mlp" in fams:
        dms = args.mlp_d_model or (QUICK_MLP_D_MODELS if args.quick else MLP_D_MODELS)
        if any(d <= 0 for d in dms):
            raise CLIError(f"--mlp-d-model must be positive, got {dms}")
        plan["mlp"] = [(args.tokens, 4 * d, d) for d in dms]
    if not (plan["attention"] and plan["attn_providers"] and plan["attn_modes"]) and \
            not (plan["mlp"] and plan["mlp_providers"] and plan["mlp_modes"]):
        raise CLIError("nothing to measure: the --family, --provider and --mode flags select no case")
    return plan


def run(args: argparse.Namespace) -> int:
    if args.aot and args.check:
        raise CLIError("--aot and --check are exclusive: --aot compiles offline, --check runs on a GPU")
    if (args.python or args.subset != "all") and not args.aot:
        raise CLIError("--python and --subset go with --aot")
    if args.aot:
        return _run_aot(args)
    plan = _plan(args)
    if not torch.cuda.is_available():
        raise CLIError("sixn kernels needs a CUDA GPU and torch sees none: kernel TFLOP/s are GPU "
                       "figures, and on a CPU the Triton kernels run only in the interpreter, far too "
                       "slow to time. On a CPU, use `sixn bench --device cpu` (training-step "
                       "throughput), `sixn flops --measure interpreter` (the kernels' executed FLOPs) "
                       "or `sixn kernels --aot sm_90` (compile for Hopper offline)")
    return _run_check(args) if args.check else _run_timing(args, plan)


def _deadline(args) -> float | None:
    return None if args.time_budget is None else time.monotonic() + args.time_budget


def _out_dir(args) -> Path:
    from sixn.bench.results import results_root
    return Path(args.out) if args.out else results_root() / "kernels"


def _run_timing(args, plan: dict) -> int:
    from sixn.bench.results import append_csv, device_name, provenance, write_json
    from sixn.bench.roofs import measure_roofs
    dev = torch.device("cuda")
    dtype = DTYPES[args.dtype]
    name = device_name(dev)
    prov = provenance(dev)
    out_dir = _out_dir(args)
    deadline = _deadline(args)
    _progress("measuring roofs for the roofline ...")
    roofs = measure_roofs(dev)
    done: list[dict] = []

    def summary(complete: bool, skipped: list[str]) -> dict:
        return {"device": name, "dtype": dtype_name(dtype), "rows": done, "ratios": ratios(done),
                "roofs": roofs.to_dict(), "complete": complete, "skipped_cases": skipped}

    def on_rows(new: list[dict]) -> None:
        done.extend(new)
        append_csv(out_dir / "kernels.csv", new, prov)
        write_json(out_dir / "kernels.json", summary(False, []), prov)
        _summary_line(new)

    items = [("attention", c) for c in plan["attention"]] + [("mlp", mnk) for mnk in plan["mlp"]]

    def label(item) -> str:
        fam, c = item
        return f"attention {c.key}" if fam == "attention" else "mlp {}x{}x{}".format(*c)

    def measure(item) -> list[dict]:
        fam, c = item
        if fam == "attention":
            return measure_attention(c, plan["attn_providers"], dev, dtype, plan["attn_modes"],
                                     args.rep_ms, name)
        return measure_mlp(*c, plan["mlp_providers"], dev, dtype, plan["mlp_modes"], args.rep_ms, name)

    def error_rows(item, msg: str) -> list[dict]:
        fam, c = item
        provs, modes = ((plan["attn_providers"], plan["attn_modes"]) if fam == "attention"
                        else (plan["mlp_providers"], plan["mlp_modes"]))
        shape = c.key if fam == "attention" else "{}x{}x{}".format(*c)
        return [{**_base_row(fam, p, m, shape, name, dtype), "error": msg} for p in provs for m in modes]

    rows, skipped = run_cases(items, measure, on_rows, error_rows, label, deadline, dev)
    write_json(out_dir / "kernels.json", summary(True, skipped), prov)
    if not args.no_plots and rows:
        _plots(rows, roofs, out_dir)
    if args.json:
        print(json.dumps([{**r, **prov, "device": r["device"]} for r in rows], indent=1))
    else:
        print(f"sixn kernels on {name}, {dtype_name(dtype)}; roofs: GEMM "
              f"{roofs.gemm_flops_per_s / 1e12:.4g} TFLOP/s, copy {roofs.bandwidth_bytes_per_s / 1e9:.4g} GB/s\n")
        print(format_table(rows, ratios(rows)))
        if skipped:
            print(f"\ntime budget spent: {len(skipped)} cases not run: {', '.join(skipped)}")
        print(f"\nrows appended to {out_dir / 'kernels.csv'}; summary {out_dir / 'kernels.json'}")
    return 0


def _run_check(args) -> int:
    from sixn.bench.results import device_name, provenance, write_csv, write_json
    dev = torch.device("cuda")
    prov = provenance(dev)
    out_dir = _out_dir(args)
    items = [(fam, c, dt) for dt in CHECK_DTYPES for fam, c in CHECK_CASES]
    done: list[dict] = []

    def summary(complete: bool, skipped: list[str]) -> dict:
        return {"device": device_name(dev), "rows": done, "all_ok": all(r["ok"] for r in done),
                "complete": complete, "skipped_cases": skipped}

    def on_rows(new: list[dict]) -> None:
        done.extend(new)
        write_csv(out_dir / "check.csv", done, prov)
        write_json(out_dir / "check.json", summary(False, []), prov)
        for r in new:
            _progress(f"   {'ok' if r['ok'] else 'FAILED'} max rel err "
                      f"{'-' if r['max_rel_err'] is None else format(r['max_rel_err'], '.2e')}"
                      + (f" ({r['error']})" if r["error"] else ""))

    def label(item) -> str:
        fam, c, dt = item
        return f"{fam} {dt} " + (c.key if fam == "attention" else "{}x{}x{}".format(*c))

    def measure(item) -> list[dict]:
        fam, c, dt = item
        if fam == "attention":
            return [check_attention(c, dev, DTYPES[dt])]
        return [check_mlp(*c, dev, DTYPES[dt])]

    def error_rows(item, msg: str) -> list[dict]:
        fam, c, dt = item
        shape = c.key if fam == "attention" else "{}x{}x{}".format(*c)
        return [{**_check_row(fam, shape, DTYPES[dt]), "error": msg}]

    rows, skipped = run_cases(items, measure, on_rows, error_rows, label, _deadline(args), dev)
    write_json(out_dir / "check.json", summary(True, skipped), prov)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_check(rows, skipped))
        print(f"\nrows written to {out_dir / 'check.csv'}; summary {out_dir / 'check.json'}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


def format_check(rows: list[dict], skipped: list[str]) -> str:
    lines = [f"{'family':<9} {'dtype':<9} {'case':<30} {'max rel err':>11} {'tol':>7}  result"]
    for r in rows:
        err = "-" if r["max_rel_err"] is None else f"{r['max_rel_err']:.2e}"
        lines.append(f"{r['family']:<9} {r['dtype']:<9} {r['shape']:<30} {err:>11} {r['tolerance']:>7g}  "
                     + ("ok" if r["ok"] else f"FAILED: {r['error']}"))
    n_ok = sum(r["ok"] for r in rows)
    lines.append(f"{n_ok} of {len(rows)} checks passed (output and every gradient against float64 "
                 f"PyTorch, max |error| / max |reference|)"
                 + (f"; {len(skipped)} not run: time budget spent" if skipped else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# --aot: the offline compile
# ------------------------------------------------------------------------------------------------

AOT_COLUMNS = ("kernel", "config", "dtype", "shape_class", "ok", "registers", "spill_bytes",
               "shared_bytes", "warps", "stages")


def aot_summary(info: dict, rows: list[dict], complete: bool) -> dict:
    """The offline compile's verdict over its rows (and which launched kernels no case reached)."""
    compiled = [r for r in rows if r.get("registers") is not None]
    missing = sorted(set(info.get("launched_kernels", [])) - set(info.get("recorded_kernels", [])))
    return {
        "arch": info.get("arch"), "triton": info.get("triton"), "ptxas": info.get("ptxas_version"),
        "subset": info.get("subset"), "complete": complete, "configurations": len(rows),
        "all_ok": bool(rows) and all(r["ok"] for r in rows),
        "failed": [f"{r['kernel']} {r.get('config') or ''} ({r.get('cases')}): {r['error']}"
                   for r in rows if not r["ok"]],
        "spilling": [f"{r['kernel']} {r['dtype']} {r['shape_class']}: {r['spill_bytes']} B"
                     for r in compiled if r["spill_bytes"]],
        "max_spill_bytes": max((r["spill_bytes"] for r in compiled), default=None),
        "max_registers": max((r["registers"] for r in compiled), default=None),
        "max_shared_bytes": max((r["shared_bytes"] for r in compiled), default=None),
        "shared_limit": rows[0]["shared_limit"] if rows else None,
        "kernels_not_covered": missing, "rows": rows,
    }


def format_aot(summary: dict) -> str:
    hdr = (f"{'kernel':<21} {'dtype':<5} {'shape class':<18} {'ok':<3} {'regs':>4} {'spill B':>7} "
           f"{'shared KiB':>10} {'warps':>5} {'stages':>6}  config")
    lines = [f"offline compile for {summary['arch']}: triton {summary['triton']}, ptxas "
             f"{summary['ptxas']}", "", hdr, "-" * len(hdr)]
    for r in summary["rows"]:
        if r.get("registers") is None:
            lines.append(f"{r['kernel']:<21} {r.get('dtype') or '-':<5} {r.get('shape_class') or '-':<18} "
                         f"no  error: {r['error']}")
            continue
        lines.append(f"{r['kernel']:<21} {r['dtype']:<5} {r['shape_class'][:18]:<18} "
                     f"{'yes' if r['ok'] else 'NO':<3} {r['registers']:>4} {r['spill_bytes']:>7} "
                     f"{r['shared_bytes'] / 1024:>10.1f} {r['warps']:>5} {r['stages']:>6}  {r['config']}")
    lines.append("")
    lines.append(f"{summary['configurations']} configurations: "
                 + ("all compiled" if summary["all_ok"] else f"{len(summary['failed'])} FAILED")
                 + f", {len(summary['spilling'])} with spills (max {summary['max_spill_bytes']} B), "
                   f"max {summary['max_registers']} registers, max shared "
                   f"{(summary['max_shared_bytes'] or 0) / 1024:.1f} KiB of "
                   f"{(summary['shared_limit'] or 0) / 1024:.0f} KiB")
    if summary["kernels_not_covered"]:
        lines.append("launched kernels no case compiled: " + ", ".join(summary["kernels_not_covered"]))
    for f in summary["failed"]:
        lines.append(f"FAILED: {f}")
    for f in summary["spilling"]:
        lines.append(f"spills: {f}")
    return "\n".join(lines)


def _run_aot(args) -> int:
    from sixn.bench.results import provenance, write_csv, write_json
    out_dir = _out_dir(args)
    prov = provenance("cpu", command=None)
    state: dict = {"info": {}, "rows": [], "stem": None}

    def path(suffix: str) -> Path:  # aot-sm_90-triton-3.6.0.csv
        return out_dir / f"aot-{args.aot}-triton-{state['info'].get('triton', 'unknown')}{suffix}"

    def on_info(info: dict) -> None:
        state["info"] = info
        prov["triton"] = info.get("triton", prov["triton"])  # the compiling Triton, maybe another's
        _progress(f"compiling for {args.aot} with triton {info.get('triton')} "
                  f"({info.get('ptxas_version')}); {info.get('cases')} cases ...")

    def on_row(row: dict) -> None:
        state["rows"].append(row)
        write_csv(path(".csv"), state["rows"], prov)
        spill = "" if not row.get("spill_bytes") else f", SPILLS {row['spill_bytes']} B"
        _progress(f"{len(state['rows'])}: {row['kernel']} {row.get('dtype')} {row.get('shape_class')}: "
                  + (f"{row['registers']} regs, {row['shared_bytes']} B shared{spill}" if row["ok"]
                     else f"FAILED {row['error']}"))

    try:
        info, rows = aot.run_child(args.aot, args.subset, python=args.python, on_row=on_row,
                                   on_info=on_info)
    except (OSError, ValueError) as e:
        raise CLIError(f"--aot: {e}") from None
    if not info:
        raise CLIError(f"--aot: the compile process reported nothing: "
                       f"{rows[-1]['error'] if rows else 'no output'}")
    summary = aot_summary(info, rows, complete=True)
    write_json(path(".json"), summary, prov)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_aot(summary))
        print(f"\nrows: {path('.csv')}; summary {path('.json')}")
    return 0 if summary["all_ok"] and not summary["kernels_not_covered"] else 1


def _summary_line(rows: list[dict]) -> None:
    parts = [f"{r['provider']} {r['mode']} " + (f"{r['tflops']:.0f}" if r["tflops"] else "error")
             for r in rows]
    _progress("   " + "; ".join(parts))


def _plots(rows: list[dict], roofs, out_dir: Path) -> list[Path]:
    from sixn.bench import plots
    made = []
    for mode in ATTENTION_MODES:
        if any(r["family"] == "attention" and r["mode"] == mode and r["tflops"] for r in rows):
            made.append(plots.plot_attention(rows, out_dir / f"attention_{mode.replace('+', '_')}.png", mode))
    if any(r["family"] == "mlp" and r["tflops"] for r in rows):
        made.append(plots.plot_mlp(rows, out_dir / "mlp.png"))
    made.append(plots.plot_roofline(rows, out_dir / "roofline.png", roofs.gemm_flops_per_s / 1e12,
                                    roofs.bandwidth_bytes_per_s / 1e9))
    _progress("plots: " + ", ".join(map(str, made)))
    return made

