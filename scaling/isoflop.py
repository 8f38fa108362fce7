"""The plan of an IsoFLOP sweep: compute budgets, the sizes trained at each, and schedules that end
exactly at the budget.

Each budget C gets `sizes_per_budget` consecutive sizes of a geometric grid of model shapes,
centred on a first guess of its optimum: the size whose run, at 40 tokens per parameter, would
spend C under the budget convention. Chinchilla's optimum is about 20 tokens per parameter; the
short CPU runs are limited by their number of updates as much as by their tokens, which favours
smaller models trained longer (a pilot at 1e10-1e11 FLOPs found the smallest sizes best at 40-200
tokens per parameter). The guess only places the window: the fits find the optimum, `sixn scale
--extend` adds the next size past an edge where the lowest loss falls, and a budget still not
bracketed is reported and left out. Sizes whose run would make fewer than MIN_STEPS updates are
not trained at that budget. Consecutive budgets share most of their sizes, so every size is trained to
several budgets: that is what lets the profiles be rebuilt under the other compute conventions
(scaling.compute_optimal).

Each run's schedule is its own: steps = round(C / FLOPs per step), the FLOPs per step of that
shape under the budget convention (model.flops for the model counts; the dispatch counter's
count of one step for "measured"), a linear warm-up of 10 % of the steps (at most 100) and a
cosine decay to its last step, so the run ends within half a step of its budget with a fully
decayed learning rate: the profiles are of runs trained to the budget, not read off longer runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from sixn.model.config import GPTConfig
from sixn.model.flops import flops_per_token, param_counts

from .train import TrainConfig, measure_step_flops

BUDGET_CONVENTIONS = ("kaplan_6N", "kaplan_6N_head", "kaplan_6N_context", "full_model",
                      "measured")
DEFAULT_BUDGET_CONVENTION = "full_model"
TOKENS_PER_PARAM_GUESS = 40.0     # only places the windows (see the module docstring)
MIN_STEPS = 150                   # shorter runs are too few updates to compare sizes by
QUICK_MIN_STEPS = 50              # --quick: a smoke test of the pipeline, not a measurement

# (n_layer, d_model) grid of the CPU IsoFLOP sweep: N = 12 L d^2 from 1.5e3 to 4.4e5, about 2x apart.
CPU_SIZES = ((2, 8), (2, 12), (2, 16), (2, 24), (2, 32), (2, 48), (2, 64), (3, 80), (4, 96))
# Full-model FLOPs (other budget conventions: the same compute at the grid's middle size):
# one decade in four budgets.
CPU_BUDGETS = (2e11, 4.3e11, 9.3e11, 2e12)
QUICK_SIZES = ((2, 8), (2, 12), (2, 16), (2, 24), (2, 32))
QUICK_BUDGETS = (2.5e10, 5e10, 1e11)
GPU_SIZES = ("ladder-25k", "ladder-98k", "ladder-197k", "ladder-786k", "ladder-3m", "ladder-14m",
             "ladder-25m", "ladder-85m")
GPU_BUDGETS = (1e15, 3e15, 1e16, 3e16)


@dataclass(frozen=True)
class IsoflopDesign:
    """Budgets (FLOPs under each budget convention; None: the preset set's default), sizes per
    budget, and the budget conventions: one design per convention, each with its own runs."""
    budgets: tuple[float, ...] | None = None
    sizes_per_budget: int = 5
    conventions: tuple[str, ...] = (DEFAULT_BUDGET_CONVENTION,)
    min_steps: int = MIN_STEPS

    def __post_init__(self) -> None:
        bad = [c for c in self.conventions if c not in BUDGET_CONVENTIONS]
        if bad or not self.conventions:
            raise ValueError(f"unknown budget convention {', '.join(bad) or '(none)'}; supported: "
                             f"{', '.join(BUDGET_CONVENTIONS)}")
        if len(set(self.conventions)) != len(self.conventions):
            raise ValueError(f"budget conventions repeat: {', '.join(self.conventions)}")
        if self.budgets is not None:
            if len(self.budgets) < 2:
                raise ValueError(f"an IsoFLOP sweep needs at least 2 budgets, got "
                                 f"{len(self.budgets)}")
            bad_b = [b for b in self.budgets if not (math.isfinite(b) and b > 0)]
            if bad_b:
                raise ValueError(f"budgets must be positive FLOPs, got {bad_b}")
            if len(set(self.budgets)) != len(self.budgets):
                raise ValueError(f"budgets must differ, got {list(self.budgets)}")
        if self.min_steps < 1:
            raise ValueError(f"min_steps must be >= 1, got {self.min_steps}")
        if self.sizes_per_budget < 3:
            raise ValueError(f"a profile needs at least 3 sizes per budget, got "
                             f"{self.sizes_per_budget}")

    def to_dict(self) -> dict:
        return {"budgets": None if self.budgets is None else list(self.budgets),
                "sizes_per_budget": self.sizes_per_budget,
                "budget_conventions": list(self.conventions), "min_steps": self.min_steps}


def default_budgets(base: Sequence[float], grid: Sequence[GPTConfig], tcfg: TrainConfig,
                    convention: str) -> tuple[float, ...]:
    """`base` budgets (full-model FLOPs) re-expressed in `convention` at the grid's middle size,
    so that designs in different conventions spend about the same real compute."""
    mid = grid[len(grid) // 2]
    ratio = step_flops(mid, tcfg, convention) / step_flops(mid, tcfg, "full_model")
    return tuple(float(f"{b * ratio:.3g}") for b in base)


@lru_cache(maxsize=256)
def _measured(model: GPTConfig, batch: int, seq_len: int) -> tuple[int | None, str]:
    """One counted step per shape (a pure function of its arguments: cached)."""
    return measure_step_flops(model, batch, seq_len)


def step_flops(model: GPTConfig, tcfg: TrainConfig, convention: str) -> float:
    """FLOPs of one training step of this shape under a budget convention."""
    if convention == "measured":
        flops, how = _measured(model.replace(name=""), tcfg.batch_size, tcfg.seq_len)
        if flops is None:
            raise ValueError(f"--budget-convention measured: {how}")
        return float(flops)
    return float(flops_per_token(model, convention, tcfg.seq_len)) * tcfg.batch_tokens


def schedule_for_budget(model: GPTConfig, tcfg: TrainConfig, budget: float,
                        convention: str, evals: int = 8, min_steps: int = MIN_STEPS) -> TrainConfig:
    """`tcfg` with steps, warm-up and evaluation interval set so the run ends at `budget`."""
    per_step = step_flops(model, tcfg, convention)
    steps = int(round(budget / per_step))
    if steps < min_steps:
        raise ValueError(f"budget {budget:.3g} FLOPs ({convention}) gives {model.name or 'a model'} "
                         f"(N = {param_counts(model).nonembedding:,}) only {steps} steps of "
                         f"{per_step:.3g} FLOPs; at least {min_steps} are needed: raise the "
                         f"budget, or use smaller sizes or batches")
    return tcfg.replace(steps=steps, warmup=min(100, max(1, steps // 10)),
                        eval_interval=max(1, steps // evals), max_tokens=0)


def window(sizes: Sequence[GPTConfig], tcfg: TrainConfig, budget: float, convention: str,
           k: int, min_steps: int = MIN_STEPS) -> list[int]:
    """Indices of up to k consecutive sizes (of `sizes`, ascending in N) centred on the size that
    would spend `budget` at TOKENS_PER_PARAM_GUESS tokens per non-embedding parameter, among the
    sizes whose run at this budget makes at least min_steps steps."""
    spend, feasible = [], []
    for i, m in enumerate(sizes):
        n = param_counts(m).nonembedding
        per_step = step_flops(m, tcfg, convention)
        spend.append(per_step / tcfg.batch_tokens * TOKENS_PER_PARAM_GUESS * n)
        if round(budget / per_step) >= min_steps:
            feasible.append(i)
    if len(feasible) < 3:
        raise ValueError(f"budget {budget:.3g} FLOPs ({convention}) leaves {len(feasible)} size(s) "
                         f"of the grid with at least {min_steps} steps; a profile needs 3: raise "
                         f"the budget or add smaller sizes")
    k = min(k, len(feasible))
    centre = min(range(len(feasible)), key=lambda j: abs(math.log(spend[feasible[j]] / budget)))
    start = min(max(0, centre - k // 2), len(feasible) - k)
    return feasible[start:start + k]
