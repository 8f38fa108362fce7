"""The dispatch counter: torch.utils.flop_counter.FlopCounterMode over one training step."""

from __future__ import annotations

import torch

from sixn.model.config import GPTConfig

from .base import CounterError, StepCount, attribute, build_step, dtype_name

# ------------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------------



def count_dispatch(cfg: GPTConfig, batch: int, seq_len: int, device: str, dtype: torch.dtype
                   ) -> StepCount:
    from torch.utils.flop_counter import FlopCounterMode
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


