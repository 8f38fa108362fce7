"""Offline compile of every kernel configuration sixn launches on a GPU architecture, with Triton's
own compiler and the ptxas Triton bundles: registers, spills and shared memory without a GPU.

How
1. Record, do not run. In a child process with the Triton interpreter off (TRITON_INTERPRET=0),
   each case calls sixn's custom ops (sixn::attention_fwd/bwd, sixn::linear_gelu_fwd/bwd) on fake
   CUDA tensors (torch FakeTensorMode), with the ops' fake implementations swapped for the real
   ones and every Triton kernel object of the kernel modules replaced by a recorder. The
   launchers so run their own code (tile table, heuristics, flags, strides, grid) and each
   `kernel[grid](*args, **kwargs)` is captured instead of launched.
2. Compile each distinct launch as Triton's JIT would at that call: its binder specialises the
   arguments (dtypes, 16-byte pointer alignment, integers divisible by 16 or equal to 1) from
   stand-ins of them, and triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 64)) builds
   it for the architecture.
3. Read the resources: shared memory from the compiled kernel's metadata; registers, spill stores
   and loads and the stack frame from ptxas's own report (-v), which Triton prints when
   TRITON_DUMP_PTXAS_LOG=1. The child uses a fresh Triton cache, so ptxas runs for every kernel.

One row per distinct compiled kernel: kernel, config (its constexpr meta-parameters), dtype, the
shape classes of the cases that launch it, ok (compiled, shared memory within the architecture's
limit), registers, spill bytes (stores + loads), stack frame, shared memory, warps, stages, ptxas
advisories (e.g. C7515: wgmma serialised), compile seconds, the error if any. A failing compile
(CompilationError, OutOfResources, PTXASError or any other) is a row with ok false; the others go on.

Cases (aot_cases): attention in bf16, fp16 and fp32, causal and full, head dims 64 and 128, padded
head dims (40, 96), small ones (16, 32), ragged and short sequences, and the model's strided q, k, v
views of one QKV projection; the fused linear + GELU in the three dtypes for even shapes, ragged M, K and N, small M,
without bias and with the pre-activation recomputed. The "ci" subset is a few of them, for a test.

Limits: the compile is the one the JIT does for these arguments on this machine's Triton; a
different Triton (the GPU machine's) may allocate registers differently, so run it with that
version too (`sixn kernels --aot sm_90 --python /path/to/python`). Nothing is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterable

ROW_PREFIX = "AOT-ROW "        # the child's stdout lines carrying one JSON row each
INFO_PREFIX = "AOT-INFO "      # the child's line with versions and coverage
KERNEL_MODULES = ("sixn.kernels.attention", "sixn.kernels.mlp", "sixn.kernels.swiglu")
CHILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Arch:
    name: str
    capability: int
    warp_size: int
    shared_limit: int       # bytes of shared memory one block may use (the opt-in maximum)
    max_registers: int      # per thread


ARCHS = {"sm_90": Arch("sm_90", 90, 32, 232448, 255)}  # H100 / H200: 227 KiB per block

ROW_KEYS = ("kernel", "config", "dtype", "shape_class", "ok", "registers", "spill_bytes",
            "spill_stores", "spill_loads", "stack_frame", "shared_bytes", "shared_limit", "warps",
            "stages", "advisories", "compile_s", "cases", "variant", "arch", "error")


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AotCase:
    """One call of sixn's ops: attention dims (B, H, T, D, causal[, H_kv, window]), mlp dims (M, N,
    K, bias, recompute) or swiglu dims (M, N, K, bias); layout "model" gives attention the views of
    one (B, T, 3 H D) projection that model.gpt passes (strided, offset q, k, v); `only` keeps the
    launches of these kernels."""
    family: str
    dtype: str
    shape_class: str
    dims: tuple
    layout: str = "contiguous"
    only: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        if self.family == "attention":
            B, H, T, D, causal, Hk, window = (*self.dims, self.dims[1], 0)[:7]
            shape = (f"B{B} H{H} T{T} D{D} {'causal' if causal else 'full'}"
                     + (f" H_kv{Hk}" if Hk != H else "") + (f" window{window}" if window else ""))
        elif self.family == "swiglu":
            M, N, K, bias = self.dims
            shape = f"M{M} N{N} K{K}" + ("" if bias else " no-bias")
        else:
            M, N, K, bias, rec = self.dims
            shape = f"M{M} N{N} K{K}" + ("" if bias else " no-bias") + (" recompute" if rec else "")
        return f"{self.family} {self.dtype} {shape}" + ("" if self.layout == "contiguous" else f" {self.layout}")


def aot_cases(subset: str = "all") -> list[AotCase]:
    """The cases compiled for `subset`: "all" or "ci" (a few representative ones)."""
    if subset == "ci":  # about 20 s of compiling on one core
        return [AotCase("attention", "bf16", "even", (2, 4, 1024, 64, True)),
                AotCase("mlp", "bf16", "even", (16384, 3072, 768, True, False)),
                AotCase("attention", "bf16", "padded-D", (2, 4, 1024, 40, True), only=("_attn_fwd",))]
    if subset != "all":
        raise ValueError(f"unknown AOT subset {subset!r}; supported: all, ci")
    cases = []
    for dt in ("bf16", "fp16", "fp32"):
        for causal in (True, False):
            for D, T, cls in ((64, 1024, "even"), (128, 1024, "even"), (64, 1000, "ragged-T"),
                              (128, 1000, "ragged-T"), (40, 1024, "padded-D"), (96, 1024, "padded-D"),
                              (40, 1000, "ragged-T,padded-D"), (64, 17, "short-T")):
                cases.append(AotCase("attention", dt, cls, (2, 4, T, D, causal)))
        for M, N, K, cls in ((16384, 3072, 768, "even"), (4092, 3072, 768, "ragged-M"),
                             (17, 3072, 768, "small-M"), (4096, 128, 32, "ragged-K"),
                             (17, 160, 40, "small-M,ragged-K,N"),
                             (4096, 160, 40, "ragged-K,N"), (4000, 6400, 1600, "ragged-M,K")):
            cases.append(AotCase("mlp", dt, cls, (M, N, K, True, False)))
    for D, cls in ((16, "even"), (32, "even")):
        cases.append(AotCase("attention", "bf16", cls, (2, 4, 1024, D, True)))
    cases += [AotCase("attention", "bf16", "even", (8, 12, 1024, 64, True), layout="model"),
              AotCase("attention", "bf16", "ragged-T", (8, 12, 1000, 64, True), layout="model"),
              AotCase("mlp", "bf16", "even", (16384, 3072, 768, False, False)),
              AotCase("mlp", "bf16", "even", (16384, 3072, 768, True, True))]
    # grouped-query and sliding-window attention, the gated (SwiGLU) MLP of the modern presets
    for dt in ("bf16", "fp16"):
        for D, T, cls in ((64, 1024, "even"), (128, 1024, "even"), (128, 1000, "ragged-T")):
            cases.append(AotCase("attention", dt, cls + ",GQA", (2, 8, T, D, True, 2, 0)))
            cases.append(AotCase("attention", dt, cls + ",window", (2, 8, T, D, True, 8, 256)))
    for dt in ("bf16", "fp16", "fp32"):
        for M, N, K, cls in ((16384, 2816, 1024, "even"), (4092, 2816, 1024, "ragged-M"),
                             (4096, 160, 40, "ragged-K,N"), (17, 2816, 1024, "small-M")):
            cases.append(AotCase("swiglu", dt, cls, (M, N, K, False)))
        cases.append(AotCase("swiglu", dt, "even", (16384, 2816, 1024, True)))
    return cases


# --------------------------------------------------------------------------------------------
# Recording launches (child process, TRITON_INTERPRET=0)
# --------------------------------------------------------------------------------------------

@dataclass
class Launch:
    kernel: str
    fn: object           # the kernel object (a Triton JITFunction, maybe wrapped in heuristics)
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a kernel object in its module: kernel[grid](*args, **kwargs) is recorded."""

    def __init__(self, name: str, fn, sink: list):
        self.name, self.fn, self.sink = name, fn, sink

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.append(Launch(self.name, self.fn, args, dict(kwargs)))
        return launch


def _kernel_objects(module) -> dict:
    from triton.runtime.jit import KernelInterface
    return {n: v for n, v in vars(module).items() if isinstance(v, KernelInterface)}


def launched_kernels() -> set[str]:
    """The kernels the launchers of KERNEL_MODULES call as `name[grid](...)` (from their source)."""
    import inspect
    names = set()
    for mod_name in KERNEL_MODULES:
        mod = importlib.import_module(mod_name)
        objs = _kernel_objects(mod)
        names |= {n for n in re.findall(r"\b(\w+)\[", inspect.getsource(mod)) if n in objs}
    return names


@contextlib.contextmanager
def _recording(sink: list):
    """Kernel objects replaced by recorders and the sixn ops' fake implementations by the real
    ones, for the duration; both restored afterwards."""
    from torch._library.custom_ops import OPDEFS
    from sixn.kernels.runtime import interpreting
    if interpreting():
        raise RuntimeError("launches can be recorded for compiling only with the Triton interpreter "
                           "off: run `python -m sixn.bench.aot` (it sets TRITON_INTERPRET=0)")
    saved = []
    for mod_name in KERNEL_MODULES:
        mod = importlib.import_module(mod_name)
        for name, obj in _kernel_objects(mod).items():
            saved.append((mod, name, obj))
            setattr(mod, name, _Recorder(name, obj, sink))
    fakes = []
    try:
        for qualname, opdef in list(OPDEFS.items()):
            if qualname.startswith("sixn::"):
                fakes.append((opdef, opdef._abstract_fn))
                opdef.register_fake(opdef._init_fn)
        yield
    finally:
        for mod, name, obj in saved:
            setattr(mod, name, obj)
        for opdef, fake in fakes:
            opdef.register_fake(fake)


def _call_case(case: AotCase) -> None:
    """Forward and backward of the case's op on fake CUDA tensors (inside FakeTensorMode)."""
    import torch
    from sixn.kernels.runtime import to_dtype
    dt = to_dtype(case.dtype)
    empty = lambda *shape: torch.empty(shape, device="cuda", dtype=dt)  # noqa: E731
    if case.family == "attention":
        B, H, T, D, causal, Hk, window = (*case.dims, case.dims[1], 0)[:7]
        if case.layout == "model":  # as model.gpt splits its fused QKV projection
            qkv = empty(B, T, 3 * H * D)
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=-1))
        else:
            q, k, v = empty(B, H, T, D), empty(B, Hk, T, D), empty(B, Hk, T, D)
        scale = 1.0 / D ** 0.5
        out, lse = torch.ops.sixn.attention_fwd(q, k, v, causal, scale, window)
        torch.ops.sixn.attention_bwd(empty(B, H, T, D), q, k, v, out, lse, None, causal, scale, window)
    elif case.family == "swiglu":
        M, N, K, bias = case.dims
        x, wg, wu = empty(M, K), empty(N, K), empty(N, K)
        bg, bu = (empty(N), empty(N)) if bias else (None, None)
        _, g, u = torch.ops.sixn.swiglu_fwd(x, wg, wu, bg, bu)
        torch.ops.sixn.swiglu_bwd(empty(M, N), g, u, x, wg, wu, bias)
    elif case.family == "mlp":
        M, N, K, bias, recompute = case.dims
        x, w = empty(M, K), empty(N, K)
        b = empty(N) if bias else None
        _, z = torch.ops.sixn.linear_gelu_fwd(x, w, b, recompute)
        torch.ops.sixn.linear_gelu_bwd(empty(M, N), x, w, b, z, recompute)
    else:
        raise ValueError(f"unknown AOT case family {case.family!r}; supported: attention, mlp, swiglu")


def record(case: AotCase) -> list[Launch]:
    """The kernel launches one case makes, in order."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    sink: list[Launch] = []
    with _recording(sink), FakeTensorMode(allow_non_fake_inputs=True):
        _call_case(case)
    return sink


# --------------------------------------------------------------------------------------------
# Compiling one launch
# --------------------------------------------------------------------------------------------

class _Pointer:
    """What Triton's specialisation reads of a tensor argument: dtype and address (a fake
    tensor has no storage; torch allocations are 16-byte aligned, views add their offset)."""

    def __init__(self, dtype, offset_bytes: int):
        self.dtype = dtype
        self._address = (1 << 30) + offset_bytes

    def data_ptr(self) -> int:
        return self._address


def _stand_in(arg):
    import torch
    if isinstance(arg, torch.Tensor):
        return _Pointer(arg.dtype, arg.storage_offset() * arg.element_size())
    return arg


def _unwrap(launch: Launch):
    """(JITFunction, args, kwargs) with heuristics applied, as the wrappers' run() would."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction
    fn, args, kwargs = launch.fn, launch.args, dict(launch.kwargs)
    while not isinstance(fn, JITFunction):
        if isinstance(fn, Heuristics):
            bound = {**dict(zip(fn.arg_names, args)), **kwargs}
            for name, rule in fn.values.items():
                kwargs[name] = rule(bound)
            fn = fn.fn
        elif isinstance(fn, Autotuner):
            raise ValueError(f"{launch.kernel} is autotuned; sixn's kernels use fixed tile tables")
        else:
            raise ValueError(f"{launch.kernel}: unsupported kernel wrapper {type(fn).__name__}")
    return fn, args, kwargs


def specialize(launch: Launch, arch: Arch):
    """(fn, ASTSource, options dict, constexprs by name) of a launch, as the JIT builds them."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature
    fn, args, kwargs = _unwrap(launch)
    backend = make_backend(GPUTarget("cuda", arch.capability, arch.warp_size))
    kwargs.setdefault("debug", bool(getattr(fn, "debug", False)) or bool(knobs.runtime.debug))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*map(_stand_in, args), **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    names = {p.name: v for p, v in zip(fn.params, bound.values()) if p.is_constexpr}
    return fn, ASTSource(fn, signature, constexprs, attrs), options.__dict__, names


def _config_text(names: dict) -> str:
    def fmt(v):
        return str(int(v)) if isinstance(v, bool) else str(v)
    return " ".join(f"{k}={fmt(v)}" for k, v in names.items())


_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_ADVICE = re.compile(r"\((C\d{4})\)\s*([^:]*:\s*)?(.*)")


def parse_ptxas(log: str) -> dict:
    """ptxas -v's resource report: registers, stack frame, spill stores and loads (the largest of
    each over the functions reported) and the advisory codes it printed (C7515 ...)."""
    regs = [int(m.group(1)) for m in _PTXAS_REGS.finditer(log)]
    spills = [tuple(map(int, m.groups())) for m in _PTXAS_SPILLS.finditer(log)]
    advice = []
    for line in log.splitlines():
        m = _PTXAS_ADVICE.search(line)
        if m:
            words = " ".join(m.group(3).split()[:8])
            item = f"{m.group(1)} {words}".strip()
            if item not in advice:
                advice.append(item)
    if not regs:
        raise ValueError("no 'Used N registers' line in the ptxas output (was TRITON_DUMP_PTXAS_LOG=1 "
                         "set, and did ptxas run, not the cache?)")
    return {"registers": max(regs), "stack_frame": max((s[0] for s in spills), default=0),
            "spill_stores": max((s[1] for s in spills), default=0),
            "spill_loads": max((s[2] for s in spills), default=0), "advisories": advice}


def _error_text(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def compile_launch(launch: Launch, arch: Arch) -> dict:
    """Compile one launch for `arch` and read its resources; errors of any kind become the row's
    error (ok false), never an exception."""
    import triton
    from triton.backends.compiler import GPUTarget
    row = {k: None for k in ROW_KEYS}
    row.update(kernel=launch.kernel, arch=arch.name, shared_limit=arch.shared_limit, ok=False)
    t0 = time.perf_counter()
    try:
        fn, src, options, names = specialize(launch, arch)
        row.update(config=_config_text(names), warps=options.get("num_warps"),
                   stages=options.get("num_stages"))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            kernel = triton.compile(src, target=GPUTarget("cuda", arch.capability, arch.warp_size),
                                    options=options)
        res = parse_ptxas(buf.getvalue())
        shared = int(kernel.metadata.shared)
        row.update(res, shared_bytes=shared, spill_bytes=res["spill_stores"] + res["spill_loads"],
                   warps=kernel.metadata.num_warps, stages=kernel.metadata.num_stages,
                   advisories="; ".join(res["advisories"]))
        if shared > arch.shared_limit:
            row["error"] = (f"shared memory {shared} B over the {arch.name} limit of "
                            f"{arch.shared_limit} B per block")
        else:
            row["ok"] = True
    except Exception as e:  # CompilationError, OutOfResources, PTXASError, ...: one row each
        row["error"] = _error_text(e)
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    return row


def launch_key(launch: Launch, arch: Arch) -> str:
    """What makes two launches the same compiled kernel: kernel, signature, constants, attributes
    and options (Triton's own cache key inputs)."""
    try:
        fn, src, options, _ = specialize(launch, arch)
        text = f"{launch.kernel}|{src.hash()}|{sorted(options.items())}"
    except Exception as e:  # compiled (and reported) separately
        text = f"{launch.kernel}|unspecialisable|{_error_text(e)}|{id(launch)}"
    return hashlib.sha1(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# The child: record every case, compile each distinct launch, stream rows
# --------------------------------------------------------------------------------------------

def compile_cases(cases: Iterable[AotCase], arch: Arch, emit: Callable[[dict], None],
                  compile_fn: Callable[[Launch, Arch], dict] = compile_launch,
                  record_fn: Callable[[AotCase], list[Launch]] = record,
                  key_fn: Callable[[Launch, Arch], str] | None = None) -> list[dict]:
    """Record every case, then compile each distinct launch once; emit(row) as each is done. A case
    that cannot be recorded is an error row; nothing stops the others."""
    key_fn = key_fn or launch_key
    distinct: dict[str, dict] = {}
    rows = []
    for case in cases:
        try:
            launches = [la for la in record_fn(case) if case.only is None or la.kernel in case.only]
        except Exception as e:
            row = {k: None for k in ROW_KEYS}
            row.update(kernel=f"({case.family} launchers)", dtype=case.dtype, arch=arch.name,
                       shape_class=case.shape_class, cases=case.key, ok=False,
                       error=f"recording failed: {_error_text(e)}")
            rows.append(row)
            emit(row)
            continue
        for launch in launches:
            key = key_fn(launch, arch)
            entry = distinct.setdefault(key, {"launch": launch, "cases": [], "classes": []})
            entry["cases"].append(case.key)
            if case.shape_class not in entry["classes"]:
                entry["classes"].append(case.shape_class)
            entry.setdefault("dtype", case.dtype)
    for key, entry in distinct.items():
        row = compile_fn(entry["launch"], arch)
        row.update(dtype=entry["dtype"], shape_class="/".join(entry["classes"]),
                   cases="; ".join(entry["cases"]), variant=key[:10])
        rows.append(row)
        emit(row)
    return rows


def _versions() -> dict:
    import triton
    out = {"triton": triton.__version__}
    try:
        from triton.backends.nvidia.compiler import get_ptxas, get_ptxas_version
        out["ptxas"] = get_ptxas(90).path
        out["ptxas_version"] = get_ptxas_version(90).strip().splitlines()[-1]
    except Exception as e:  # reported, not fatal
        out["ptxas_version"] = f"unknown ({_error_text(e)})"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sixn.bench.aot",
                                description="compile sixn's kernel launches offline (child of "
                                            "`sixn kernels --aot`); one JSON row per line")
    p.add_argument("--arch", choices=tuple(ARCHS), default="sm_90")
    p.add_argument("--subset", choices=("all", "ci"), default="all")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(f"{p.prog}: error: TRITON_INTERPRET is set; the offline compile needs it unset or 0",
              file=sys.stderr)
        return 2
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    import sixn.kernels  # noqa: F401  (the kernels and their custom ops)
    cases = aot_cases(a.subset)
    recorded = set()
    for case in aot_cases("all"):  # coverage: the launched kernels the full list reaches (cheap)
        with contextlib.suppress(Exception):
            recorded |= {launch.kernel for launch in record(case)}
    info = {**_versions(), "arch": a.arch, "subset": a.subset, "cases": len(cases),
            "launched_kernels": sorted(launched_kernels()), "recorded_kernels": sorted(recorded)}
    print(INFO_PREFIX + json.dumps(info), flush=True)

    def emit(row: dict) -> None:
        print(ROW_PREFIX + json.dumps(row), flush=True)

    compile_cases(cases, ARCHS[a.arch], emit)
    return 0


# --------------------------------------------------------------------------------------------
# The parent side
# --------------------------------------------------------------------------------------------

def run_child(arch: str = "sm_90", subset: str = "all", python: str | None = None,
              on_row: Callable[[dict], None] | None = None, on_info: Callable[[dict], None] | None = None,
              timeout: float = CHILD_TIMEOUT_S) -> tuple[dict, list[dict]]:
    """Run the compile in a child process (`python` may be another environment's interpreter, to
    check its Triton); returns (info, rows), calling on_row as each row arrives. A child that
    dies or times out still returns the rows it sent, plus an error row saying so."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHS)}")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DUMP_PTXAS_LOG="1", PYTHONUNBUFFERED="1")
    info: dict = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sixn-aot-") as cache:
        env["TRITON_CACHE_DIR"] = cache
        cmd = [python or sys.executable, "-m", "sixn.bench.aot", "--arch", arch, "--subset", subset]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        stderr_tail: list[str] = []
        t0 = time.monotonic()
        import threading

        def drain_stderr():
            for line in proc.stderr:
                stderr_tail.append(line)
                del stderr_tail[:-40]
        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                if line.startswith(ROW_PREFIX):
                    row = json.loads(line[len(ROW_PREFIX):])
                    rows.append(row)
                    if on_row:
                        on_row(row)
                elif line.startswith(INFO_PREFIX):
                    info = json.loads(line[len(INFO_PREFIX):])
                    if on_info:
                        on_info(info)
            rc = proc.wait()
        finally:
            timer.cancel()
        reader.join(timeout=5)
        if rc != 0:
            why = ("timed out" if time.monotonic() - t0 >= timeout else f"exited with status {rc}")
            tail = "".join(stderr_tail).strip().splitlines()[-3:]
            row = {k: None for k in ROW_KEYS}
            row.update(kernel="(compile process)", arch=arch, ok=False,
                       error=f"the compile process {why} after {len(rows)} rows: " + " | ".join(tail))
            rows.append(row)
            if on_row:
                on_row(row)
    return info, rows


if __name__ == "__main__":
    sys.exit(main())
