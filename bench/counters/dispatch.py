"""The dispatch counter: torch.utils.flop_counter.FlopCounterMode over one training step.

FlopCounterMode has no FLOP formula for PyTorch's grouped GEMMs (torch._grouped_mm, which
torch.nn.functional.grouped_mm and Hugging Face transformers' default mixture-of-experts path
call): MoE experts run that way count 0 FLOPs. This module registers one (`grouped_mm_flops`), so
the experts are counted wherever it is imported (any `sixn.bench.counters` import).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from sixn.model.config import GPTConfig

from .base import CounterError, StepCount, StepProgress, attribute, build_step, dtype_name


def grouped_mm_flops(a_shape, b_shape, offs=None) -> int:
    """2 x the multiply-adds of torch._grouped_mm(a, b, offs=offs).

    The four layouts (G groups; offs, when given, holds the cumulative end of each group along the
    ragged dimension, so its last entry is the number of rows actually used):
      a (S, K)    @ b (G, K, N) -> (S, N):    2 S K N        (each row of a meets one group)
      a (G, M, K) @ b (K, S)    -> (M, S):    2 M K S
      a (M, S)    @ b (S, N)    -> (G, M, N): 2 M S N        (the reduction split into groups)
      a (G, M, K) @ b (G, K, N) -> (G, M, N): 2 G M K N      (a batched matmul)
    With offs the ragged dimension counts up to its last offset only (rows past it are not
    computed); without data (meta tensors) it counts whole."""
    used = None
    if offs is not None and offs.device.type != "meta" and offs.numel():
        used = int(offs[-1])
    if len(a_shape) == 2 and len(b_shape) == 3:
        S, K = a_shape
        return 2 * (S if used is None else min(used, S)) * K * b_shape[2]
    if len(a_shape) == 3 and len(b_shape) == 2:
        K, S = b_shape
        return 2 * a_shape[1] * K * (S if used is None else min(used, S))
    if len(a_shape) == 2 and len(b_shape) == 2:
        M, S = a_shape
        return 2 * M * (S if used is None else min(used, S)) * b_shape[1]
    G, M, K = a_shape
    return 2 * G * M * K * b_shape[2]


@register_flop_formula(torch.ops.aten._grouped_mm, get_raw=True)
def _grouped_mm_formula(a, b, offs=None, bias=None, out_dtype=None, *args, out_val=None,
                        **kwargs) -> int:
    return grouped_mm_flops(tuple(a.shape), tuple(b.shape), offs)


def count_dispatch(cfg: GPTConfig, batch: int, seq_len: int, device: str, dtype: torch.dtype
                   ) -> StepCount:
    from torch.utils.flop_counter import FlopCounterMode
    if cfg.moe and device == "meta":
        raise CounterError("a mixture of experts routes on data: count it on small real tensors "
                           "(device cpu or cuda), not on the meta device")
    if cfg.recompute == "full":
        raise CounterError("the dispatch counter cannot attribute a step with full recompute to "
                           "groups (FlopCounterMode's module tracking loses the blocks re-run in "
                           "backward); count recompute='selective' or 'none', or use "
                           "FlopCounterMode's total directly")
    with StepProgress(f"dispatch counter, {cfg.name}", cfg.n_layer) as progress:
        model, step = build_step(cfg, batch, seq_len, device, dtype)
        progress.watch(model)
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
