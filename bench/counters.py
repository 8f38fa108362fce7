"""Three counters of the FLOPs a training step executes, behind one interface.

    count_step(cfg, batch, seq_len, counter="dispatch", backend=None, device=None, dtype=None)
        -> StepCount(total, by_group, by_kernel, raw, ...)

One training step is model(idx, targets) then loss.backward(): forward and backward, no optimizer.
`total` is the matmul FLOPs executed in that step (2 per multiply-add), `by_group` splits it over
model.flops.GROUPS (Kaplan's rows: qkv, attention, project, feedforward, de-embed; "other" holds
matmul work found outside them, normally 0). The analytic side is model.flops.executed(cfg, batch,
seq_len, spec) with the spec of the backend's kernels (`exec_spec`).

- dispatch: torch.utils.flop_counter.FlopCounterMode. Formula-based per dispatched op on the real
  shapes, sixn's custom ops counted by the formulas they register. Attribution by module: the
  counter's module hierarchy (FQNs such as "GPT.blocks.0.attn.qkv") gives each op's innermost
  module, which names its group. The torch backend defaults to the meta device (shapes only: the
  same ops are dispatched, nothing is computed), so any model size counts in about a second.
- interpreter: the Triton interpreter on the CPU (TRITON_INTERPRET=1). Every tl.dot that a kernel
  actually executes adds 2 M N K for its block shapes, so causal block skipping, padding of ragged
  tiles and the backward recompute are counted as they run; what runs on the PyTorch side (cuBLAS
  on a GPU) is counted by FlopCounterMode with sixn's own ops taken out (their real work is the
  dots). For the torch backend there are no kernels and it equals dispatch (on real CPU tensors).
- ncu: Nsight Compute hardware counters on an NVIDIA GPU (bench.ncu): tensor-core FLOPs per kernel
  of one warmed-up, NVTX-marked step, attributed to groups by NVTX module ranges.

A counter that cannot count raises CounterError saying why and what to do; none of them ever falls
back to an analytic number.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.config import GPTConfig
from model.flops import GROUPS, ExecSpec, executed, model_flops_per_step

# Without a GPU the triton backend runs in the interpreter. TRITON_INTERPRET must be set before
# triton.language is first imported (torch.utils.flop_counter imports it), or Triton's own jit'd
# helpers (tl.zeros, tl.cdiv, ...) stay compiled-mode functions that the interpreter cannot call.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

COUNTERS = ("dispatch", "interpreter", "ncu")
COUNTER_BACKENDS = ("torch", "triton")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
MATMUL_GROUPS = tuple(g for g in GROUPS if g != "other")


class CounterError(RuntimeError):
    """A counter cannot count here (tool missing, no permission, no GPU, hook point missing ...)."""


@dataclass
class StepCount:
    counter: str
    backend: str
    batch: int
    seq_len: int
    device: str
    dtype: str
    total: int                                   # matmul FLOPs executed in one fwd+bwd step
    by_group: dict[str, int]                     # over model.flops.GROUPS
    by_kernel: list[dict] = field(default_factory=list)  # {name, group, flops}
    raw: Any = None                              # the counter's raw output, saved beside summaries
    extra: dict = field(default_factory=dict)    # counter-specific figures (CUDA-core FLOPs, ...)

    def to_dict(self, with_raw: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("counter", "backend", "batch", "seq_len", "device", "dtype",
                                           "total", "by_group", "by_kernel", "extra")}
        if with_raw:
            d["raw"] = self.raw
        return d


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------

def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} not supported; supported: float32, bfloat16, float16")
        return dtype
    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; supported: float32, bfloat16, float16") from None


def dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


def exec_spec(cfg: GPTConfig, batch: int, seq_len: int, backend: str, dtype: torch.dtype,
              device: str) -> ExecSpec:
    """How the backend's kernels execute (for model.flops.executed): the torch reference's spec, or
    kernels.spec.exec_spec for the triton kernels (their block sizes at this shape and dtype)."""
    if backend == "torch":
        return ExecSpec()
    if backend == "triton":
        try:
            from kernels.spec import exec_spec as triton_spec
        except ImportError as e:
            raise CounterError(f"the triton backend's execution spec (kernels/spec.py) is not "
                               f"available: {e}") from None
        dev = "cuda" if torch.device(device).type == "cuda" else "cpu"
        return triton_spec(cfg.replace(backend="triton"), batch, seq_len, dtype, dev)
    raise ValueError(f"backend {backend!r} not supported by the counters; supported: "
                     f"{', '.join(COUNTER_BACKENDS)}")


def _check_args(cfg: GPTConfig, batch: int, seq_len: int, counter: str, backend: str) -> None:
    if counter not in COUNTERS:
        raise ValueError(f"unknown counter {counter!r}; supported: {', '.join(COUNTERS)}")
    if backend not in COUNTER_BACKENDS:
        raise ValueError(f"backend {backend!r} not supported by the counters; supported: "
                         f"{', '.join(COUNTER_BACKENDS)} (sdpa's attention is invisible to "
                         f"FlopCounterMode on the CPU)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= cfg.n_ctx:
        raise ValueError(f"seq_len must be an int in [1, n_ctx={cfg.n_ctx}], got {seq_len!r}")


def build_step(cfg: GPTConfig, batch: int, seq_len: int, device: str, dtype: torch.dtype,
               seed: int = 0):
    """A model and a closure that runs one training step (forward with loss, then backward)."""
    from model.gpt import GPT
    torch.manual_seed(seed)
    with torch.device(device):
        model = GPT(cfg)
    model = model.to(dtype=dtype)
    if device == "meta":
        idx = torch.empty(batch, seq_len, dtype=torch.long, device="meta")
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        idx = torch.randint(0, cfg.n_vocab, (batch, seq_len), generator=g).to(device)

    def step():
        _, loss = model(idx, idx)
        loss.backward()
    return model, step


def group_of_module(fqn: str) -> str:
    """The group of FLOPs executed with `fqn` as the innermost module: 'GPT.blocks.3.attn.qkv' ->
    qkv, '....attn.proj' -> project, '....attn' -> attention (the products between the linears),
    '....mlp' or below -> feedforward, the model root itself -> de-embed (its only product is the
    head's F.linear); anything else -> other."""
    parts = fqn.split(".")
    if fqn == "Global":
        return "other"
    if len(parts) == 1:
        return "de-embed"
    if "attn" in parts:
        i = parts.index("attn")
        sub = parts[i + 1] if i + 1 < len(parts) else None
        return {None: "attention", "qkv": "qkv", "proj": "project"}.get(sub, "other")
    if "mlp" in parts:
        return "feedforward"
    return "other"


def exclusive_counts(flop_counts: dict[str, dict[Any, int]]) -> dict[str, dict[str, int]]:
    """FlopCounterMode.get_flop_counts() counts every op in each enclosing module; subtract the
    children to get what each module ran itself ({fqn: {op name: flops}})."""
    keys = set(flop_counts)

    def parent(k: str) -> str | None:
        if k == "Global":
            return None
        parts = k.split(".")
        for n in range(len(parts) - 1, 0, -1):
            p = ".".join(parts[:n])
            if p in keys:
                return p
        return "Global" if "Global" in keys else None

    excl: dict[str, dict[str, int]] = {k: {str(op): int(v) for op, v in d.items()}
                                       for k, d in flop_counts.items()}
    for k, d in flop_counts.items():
        p = parent(k)
        if p is None:
            continue
        for op, v in d.items():
            excl[p][str(op)] = excl[p].get(str(op), 0) - int(v)
    return {k: {op: v for op, v in d.items() if v} for k, d in excl.items()}


def attribute(flop_counts: dict[str, dict[Any, int]], skip_op=lambda op: False
              ) -> tuple[dict[str, int], list[dict]]:
    """(by_group, by_kernel) from a FlopCounterMode hierarchy; ops with skip_op(name) left out."""
    by_group = {g: 0 for g in GROUPS}
    by_kernel = []
    for fqn, ops in sorted(exclusive_counts(flop_counts).items()):
        g = group_of_module(fqn)
        for op, v in sorted(ops.items()):
            if skip_op(op):
                continue
            if v < 0:
                raise CounterError(f"FlopCounterMode's module hierarchy is inconsistent at {fqn} "
                                   f"({op}: {v}); cannot attribute FLOPs to groups")
            by_group[g] += v
            by_kernel.append({"name": f"{fqn}:{op}", "group": g, "flops": v})
    return by_group, by_kernel


def _is_sixn_op(op_name: str) -> bool:
    return op_name.startswith("sixn.") or op_name.startswith("sixn::")


# ------------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------------

def _ensure_kernels(backend: str) -> None:
    if backend == "triton":
        try:
            import kernels  # noqa: F401  (registers the sixn custom ops and their FLOP formulas)
        except ImportError as e:
            raise CounterError(f"the triton backend needs sixn's kernels package: {e}") from None


def count_dispatch(cfg: GPTConfig, batch: int, seq_len: int, device: str, dtype: torch.dtype
                   ) -> StepCount:
    from torch.utils.flop_counter import FlopCounterMode
    _ensure_kernels(cfg.backend)
    model, step = build_step(cfg, batch, seq_len, device, dtype)
    with FlopCounterMode(display=False) as fc:
        step()
    counts = fc.get_flop_counts()
    by_group, by_kernel = attribute(counts)
    total = int(fc.get_total_flops())
    if sum(by_group.values()) != total:
        raise CounterError(f"dispatch attribution lost FLOPs: groups sum to {sum(by_group.values())}, "
                           f"FlopCounterMode total {total}")
    raw = {k: {str(op): int(v) for op, v in d.items()} for k, d in counts.items()}
    return StepCount("dispatch", cfg.backend, batch, seq_len, device, dtype_name(dtype), total,
                     by_group, by_kernel, raw)


# ------------------------------------------------------------------------------------------------
# interpreter
# ------------------------------------------------------------------------------------------------

class _DotTally:
    """Block products executed by the Triton interpreter, by kernel and group."""

    def __init__(self, module_of_launch):
        self.lock = threading.Lock()
        self.local = threading.local()
        self.module_of_launch = module_of_launch
        self.flops: dict[tuple[str, str], int] = defaultdict(int)
        self.dots: dict[tuple[str, str], int] = defaultdict(int)
        self.launches: dict[tuple[str, str], int] = defaultdict(int)

    def _stack(self) -> list:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
            self.local.paused = 0
        return self.local.stack

    def push(self, kernel: str) -> None:
        key = (kernel, group_of_module(self.module_of_launch()))
        self._stack().append(key)
        if not self.local.paused:
            with self.lock:
                self.launches[key] += 1

    def pop(self) -> None:
        self._stack().pop()

    def add_dot(self, a_shape, b_shape) -> None:
        stack = self._stack()
        if self.local.paused:
            return
        if len(a_shape) < 2 or len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
            raise CounterError(f"unexpected tl.dot operand shapes {tuple(a_shape)} x {tuple(b_shape)}")
        # (..., M, K) x (..., K, N): 2 M N K per product, times any batch dimensions
        flops = 2 * math.prod(a_shape) * b_shape[-1]
        key = stack[-1] if stack else ("<outside a kernel launch>", "other")
        with self.lock:
            self.flops[key] += flops
            self.dots[key] += 1

    @contextlib.contextmanager
    def paused(self):
        self._stack()
        self.local.paused += 1
        try:
            yield
        finally:
            self.local.paused -= 1


@contextlib.contextmanager
def _interpreter_hooks(tally: _DotTally):
    """Wrap the interpreter's dot and kernel launch (triton.runtime.interpreter) for the duration."""
    try:
        from triton.runtime import interpreter as interp
    except ImportError as e:
        raise CounterError(f"the interpreter counter needs triton: {e}") from None
    builder_cls = getattr(interp, "InterpreterBuilder", None)
    grid_cls = getattr(interp, "GridExecutor", None)
    if builder_cls is None or not hasattr(builder_cls, "create_dot") or grid_cls is None:
        import triton
        raise CounterError(
            f"triton {triton.__version__}: triton.runtime.interpreter has no InterpreterBuilder."
            f"create_dot / GridExecutor to hook; the interpreter counter supports triton 3.x "
            f"interpreters that have them (tested with 3.9). Use --measure dispatch instead.")
    builder = getattr(interp, "interpreter_builder", None)
    if builder is not None and "create_dot" in vars(builder):
        raise CounterError("triton's interpreter_builder overrides create_dot on the instance; "
                           "the interpreter counter cannot hook it in this triton version")
    orig_dot = builder_cls.create_dot
    orig_call = grid_cls.__call__

    def create_dot(self, a, b, *args, **kwargs):
        tally.add_dot(a.data.shape, b.data.shape)
        return orig_dot(self, a, b, *args, **kwargs)

    def call(self, *args, **kwargs):
        tally.push(getattr(self.fn, "__name__", repr(self.fn)))
        try:
            return orig_call(self, *args, **kwargs)
        finally:
            tally.pop()

    patched = [(builder_cls, "create_dot", orig_dot), (grid_cls, "__call__", orig_call)]
    builder_cls.create_dot = create_dot
    grid_cls.__call__ = call
    try:  # autotuning benchmarks the configs by running them: not part of the step's work
        from triton.runtime.autotuner import Autotuner
        orig_bench = Autotuner._bench

        def _bench(self, *args, **kwargs):
            with tally.paused():
                return orig_bench(self, *args, **kwargs)
        Autotuner._bench = _bench
        patched.append((Autotuner, "_bench", orig_bench))
    except (ImportError, AttributeError):
        pass
    try:
        yield
    finally:
        for obj, name, orig in patched:
            setattr(obj, name, orig)


def _interpreting() -> bool:
    """TRITON_INTERPRET is on, and triton.language's jit'd helpers were built for the interpreter."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
    except ImportError:
        return True
    for name in ("zeros", "cdiv", "sigmoid", "softmax"):
        f = getattr(tl, name, None)
        if isinstance(f, InterpretedFunction):
            return True
        if isinstance(f, JITFunction):
            return False  # triton.language was imported before TRITON_INTERPRET was set
    return True


def count_interpreter(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype) -> StepCount:
    from torch.utils.flop_counter import FlopCounterMode
    if cfg.backend == "triton":
        if not _interpreting():
            raise CounterError("the interpreter counter runs the Triton kernels in the interpreter, "
                               "which needs TRITON_INTERPRET=1 set before triton is first imported "
                               "(sixn sets it when no CUDA device is visible; here it was not set in "
                               "time). Start the process with it, e.g. CUDA_VISIBLE_DEVICES= "
                               "TRITON_INTERPRET=1 sixn flops --measure interpreter ...")
        _ensure_kernels("triton")
    model, step = build_step(cfg, batch, seq_len, "cpu", dtype)
    fc = FlopCounterMode(display=False)

    def innermost_module() -> str:
        parents = [p for p in fc.mod_tracker.parents if p != "Global"]
        return max(parents, key=lambda p: p.count(".")) if parents else "Global"

    tally = _DotTally(innermost_module)
    with _interpreter_hooks(tally), fc:
        step()
    counts = fc.get_flop_counts()
    torch_group, torch_kernels = attribute(counts, skip_op=_is_sixn_op)
    sixn_ops = sum(v for op, v in counts.get("Global", {}).items() if _is_sixn_op(str(op)))
    by_group = dict(torch_group)
    by_kernel = [dict(k, name=f"torch {k['name']}") for k in torch_kernels]
    for (kernel, group), fl in sorted(tally.flops.items()):
        by_group[group] += fl
        by_kernel.append({"name": kernel, "group": group, "flops": fl,
                          "dots": tally.dots[(kernel, group)],
                          "launches": tally.launches[(kernel, group)]})
    kernel_flops = sum(tally.flops.values())
    if cfg.backend == "triton" and sixn_ops and not kernel_flops:
        raise CounterError("sixn's custom ops ran but the interpreter executed no tl.dot: the kernels "
                           "did not run in the interpreter, so nothing was counted")
    total = sum(by_group.values())
    raw = {"torch_ops": {k: {str(op): int(v) for op, v in d.items()} for k, d in counts.items()},
           "kernels": [{"kernel": k, "group": g, "flops": v, "dots": tally.dots[(k, g)],
                        "launches": tally.launches[(k, g)]} for (k, g), v in sorted(tally.flops.items())]}
    extra = {"kernel_dot_flops": kernel_flops, "torch_side_flops": total - kernel_flops,
             "sixn_op_formula_flops": int(sixn_ops)}
    return StepCount("interpreter", cfg.backend, batch, seq_len, "cpu", dtype_name(dtype), total,
                     by_group, by_kernel, raw, extra)


# ------------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------------

def default_device(counter: str, backend: str) -> str:
    if counter == "ncu":
        return "cuda"
    if counter == "interpreter":
        return "cpu"
    if backend == "torch":
        return "meta"
    return "cuda" if torch.cuda.is_available() else "cpu"


def count_step(cfg: GPTConfig, batch: int, seq_len: int | None = None, counter: str = "dispatch",
               backend: str | None = None, device: str | None = None,
               dtype: str | torch.dtype | None = None) -> StepCount:
    """Executed matmul FLOPs of one training step (forward + backward) of `batch` sequences of
    `seq_len` tokens of `cfg` with `backend` (default cfg.backend), counted by `counter`."""
    backend = backend or cfg.backend
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    _check_args(cfg, batch, seq_len, counter, backend)
    cfg = cfg.replace(backend=backend) if cfg.backend != backend else cfg
    if counter == "ncu":
        from bench import ncu
        ncu.check_environment()  # no GPU / no ncu: say so before anything else
    device = str(device or default_device(counter, backend))
    if counter == "interpreter" and torch.device(device).type != "cpu":
        raise ValueError(f"the interpreter counter runs on the CPU; got device {device!r}")
    if counter == "ncu" and torch.device(device).type != "cuda":
        raise ValueError(f"the ncu counter needs a CUDA device; got device {device!r}")
    if device == "meta" and backend != "torch":
        raise ValueError("the meta device runs no kernels: use it with backend torch only")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise CounterError(f"device {device!r} asked for but no CUDA GPU is visible "
                           f"(torch.cuda.is_available() is False)")
    dt = resolve_dtype(dtype, device)
    if counter == "dispatch":
        return count_dispatch(cfg, batch, seq_len, device, dt)
    if counter == "interpreter":
        return count_interpreter(cfg, batch, seq_len, dt)
    from bench import ncu
    return ncu.count_step_ncu(cfg, batch, seq_len, device, dt)


def analytic_executed(cfg: GPTConfig, sc: StepCount) -> tuple[dict[str, int], ExecSpec]:
    dev = "cpu" if sc.device == "meta" else sc.device
    spec = exec_spec(cfg, sc.batch, sc.seq_len, sc.backend, DTYPES[sc.dtype], dev)
    ex = executed(cfg, sc.batch, sc.seq_len, spec)
    return {g: v for g, v in ex.by_group().items() if g != "other"}, spec


def compare(sc: StepCount, cfg: GPTConfig) -> dict:
    """Measured against analytic: the summary that `sixn flops --measure` prints and saves."""
    cfg = cfg.replace(backend=sc.backend)
    analytic, spec = analytic_executed(cfg, sc)
    steps = {conv: model_flops_per_step(cfg, sc.batch, sc.seq_len, conv)
             for conv in ("kaplan_6N", "kaplan_6N_context", "palm", "full_model")}
    a_total = sum(analytic.values())
    return {
        "counter": sc.counter, "backend": sc.backend, "device": sc.device, "dtype": sc.dtype,
        "batch": sc.batch, "seq_len": sc.seq_len, "config": cfg.to_dict(), "spec": spec.name,
        "measured_total": int(sc.total), "analytic_executed_total": int(a_total),
        "ratio": sc.total / a_total if a_total else None,
        "model_flops_total": steps["full_model"],
        "kaplan_6N_total": steps["kaplan_6N"], "kaplan_6N_context_total": steps["kaplan_6N_context"],
        "palm_total": steps["palm"],
        "by_group": dict(sc.by_group), "analytic_executed": analytic,
        "by_kernel": sc.by_kernel, "extra": sc.extra,
    }


def save_raw(sc: StepCount, stem: str | Path, prov: dict | None = None) -> Path:
    """The counter's raw output beside a summary: <stem>.json (and <stem>.csv for ncu's CSV)."""
    from bench.provenance import atomic_write_text, write_json
    stem = Path(stem)
    raw = sc.raw
    if isinstance(raw, dict) and isinstance(raw.get("csv"), str):
        atomic_write_text(stem.with_suffix(".csv"), raw["csv"])
        raw = {k: v for k, v in raw.items() if k != "csv"}
        raw["csv_file"] = stem.with_suffix(".csv").name
    path = stem.with_suffix(".json")
    write_json(path, {"counter": sc.counter, "backend": sc.backend, "batch": sc.batch,
                      "seq_len": sc.seq_len, "device": sc.device, "dtype": sc.dtype, "raw": raw}, prov)
    return path
