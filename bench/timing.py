"""The one timing helper of sixn: medians and 20/80 quantiles of a callable.

On CUDA it is triton.testing.do_bench (L2 flushed between calls, CUDA-event timing); on the CPU a
perf_counter loop with the same warm-up / repetition budget and the same quantiles.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def bench(fn: Callable[[], object], device: str | torch.device = "cpu", warmup_ms: float = 25,
          rep_ms: float = 100, min_reps: int = 3, max_reps: int = 1000) -> Timing:
    dev = torch.device(device)
    if dev.type == "cuda":
        import triton.testing
        med, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                                                quantiles=[0.5, 0.2, 0.8])
        est = max(1, int(rep_ms / max(med, 1e-6)))
        return Timing(float(med), float(p20), float(p80), est)
    t_end = time.perf_counter() + warmup_ms / 1e3
    fn()
    while time.perf_counter() < t_end:
        fn()
    times: list[float] = []
    t_end = time.perf_counter() + rep_ms / 1e3
    while (len(times) < min_reps or time.perf_counter() < t_end) and len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    med, p20, p80 = np.quantile(times, [0.5, 0.2, 0.8])  # linear interpolation between order statistics
    return Timing(float(med), float(p20), float(p80), len(times))


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
