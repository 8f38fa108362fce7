"""The interpreter counter: every tl.dot the Triton interpreter executes, 2 M N K each."""

from __future__ import annotations

import contextlib
import math
import threading
from collections import defaultdict

import torch

from sixn.model.config import GPTConfig

from sixn.kernels.runtime import interpreting

from .base import (CounterError, StepCount, StepProgress, _is_sixn_op, attribute, build_step,
                   dtype_name, group_of_module)

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


def count_interpreter(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype) -> StepCount:
    if cfg.backend == "triton":
        if not interpreting():
            raise CounterError("the interpreter counter runs the Triton kernels in the interpreter, "
                               "which needs TRITON_INTERPRET=1 set before triton is first imported "
                               "(sixn sets it when no CUDA device is visible; here it was not set in "
                               "time). Start the process with it, e.g. CUDA_VISIBLE_DEVICES= "
                               "TRITON_INTERPRET=1 sixn flops --measure interpreter ...")
    with StepProgress(f"interpreter counter, {cfg.name}", cfg.n_layer) as progress:
        model, step = build_step(cfg, batch, seq_len, "cpu", dtype)
        progress.watch(model)
        return _count(cfg, batch, seq_len, dtype, model, step)


def _count(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype, model, step) -> StepCount:
    """One step of `model` under FlopCounterMode with the interpreter's tl.dot tally."""
    from torch.utils.flop_counter import FlopCounterMode
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


