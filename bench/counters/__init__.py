"""Counters of the FLOPs a training step executes, behind one interface (details in base.py).

    count_step(cfg, batch, seq_len, counter="dispatch" | "interpreter" | "ncu", ...) -> StepCount

- dispatch.py: torch.utils.flop_counter.FlopCounterMode over the dispatched ops
- interpreter.py: every tl.dot the Triton interpreter executes
- ncu.py: Nsight Compute hardware counters on an NVIDIA GPU
"""

from __future__ import annotations

import torch

from sixn.model.config import GPTConfig
from sixn.model.memory import check_training_memory

from . import ncu
from .base import (COUNTER_BACKENDS, COUNTERS, CounterError, StepCount, _check_args, analytic_executed,
                   build_step, compare, dtype_name, resolve_dtype, save_raw)
from .dispatch import count_dispatch
from .interpreter import count_interpreter

__all__ = ["COUNTERS", "COUNTER_BACKENDS", "CounterError", "StepCount", "analytic_executed", "build_step",
           "compare", "count_step", "default_device", "dtype_name", "resolve_dtype", "save_raw"]

# ------------------------------------------------------------------------------------------------
# The interface
# ------------------------------------------------------------------------------------------------

def default_device(counter: str, backend: str, cfg: GPTConfig | None = None) -> str:
    if counter == "ncu":
        return "cuda"
    if counter == "interpreter":
        return "cpu"
    if backend == "torch" and not (cfg is not None and cfg.moe):  # experts route on real data
        return "meta"
    return "cuda" if torch.cuda.is_available() else "cpu"


def count_step(cfg: GPTConfig, batch: int, seq_len: int | None = None, counter: str = "dispatch",
               backend: str | None = None, device: str | None = None,
               dtype: str | torch.dtype | None = None, ncu_self_check: dict | None = None) -> StepCount:
    """Executed matmul FLOPs of one training step (forward + backward) of `batch` sequences of
    `seq_len` tokens of `cfg` with `backend` (default cfg.backend), counted by `counter`.
    ncu_self_check: a passed ncu.gemm_self_check() to reuse (the ncu counter runs one otherwise)."""
    backend = backend or cfg.backend
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    _check_args(cfg, batch, seq_len, counter, backend)
    cfg = cfg.replace(backend=backend) if cfg.backend != backend else cfg
    if counter == "ncu":
        ncu.check_environment()  # no GPU / no ncu: say so before anything else
    device = str(device or default_device(counter, backend, cfg))
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
    if device != "meta":  # a real step: its memory is checked before anything is allocated
        check_training_memory(cfg, batch, seq_len, device, activation_bytes=dt.itemsize,
                              optimizer=False, what=f"model {cfg.name} at batch {batch}")
    if counter == "dispatch":
        return count_dispatch(cfg, batch, seq_len, device, dt)
    if counter == "interpreter":
        return count_interpreter(cfg, batch, seq_len, dt)
    return ncu.count_step_ncu(cfg, batch, seq_len, device, dt, self_check=ncu_self_check)


