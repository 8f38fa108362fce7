"""The gradient noise scale B_simple (McCandlish et al. 2018, arXiv 1812.06162, App. A.1).

With gradients estimated at two batch sizes B_small < B_big,

    E|G_B|^2 = |G|^2 + tr(Sigma) / B,

so two measured squared norms give unbiased estimates of the true gradient's squared norm and the
per-example covariance trace:

    |G|^2     = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1 / B_small - 1 / B_big)
    B_simple  = tr(Sigma) / |G|^2

Here a training step's batch is split into k micro-batches: each micro-batch gradient is a
"small" estimate (|G_small|^2 is the mean of their squared norms) and their mean, the step's
gradient, is the "big" one, so the estimate costs no extra FLOPs. Single estimates are very noisy
(|G|^2 can come out negative); as McCandlish et al. advise, |G|^2 and tr(Sigma) are averaged
separately (a bias-corrected exponential moving average) and B_simple is their ratio. Batch sizes
are in tokens, as Kaplan's B_crit is, so B_simple reads as a critical batch in tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def two_batch_estimates(small_sq_norm: float, big_sq_norm: float, b_small: float, b_big: float
                        ) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) from squared gradient norms measured at batch sizes b_small < b_big."""
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}")
    g2 = (b_big * big_sq_norm - b_small * small_sq_norm) / (b_big - b_small)
    s = (small_sq_norm - big_sq_norm) / (1.0 / b_small - 1.0 / b_big)
    return g2, s


@dataclass
class NoiseScale:
    """EMA of |G|^2 and tr(Sigma) over measurements; b_simple is their ratio (None until usable)."""

    decay: float = 0.9
    g2: float = 0.0
    s: float = 0.0
    weight: float = 0.0   # sum of EMA weights, for the bias correction
    count: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"noise EMA decay must be in [0, 1), got {self.decay}")

    def update(self, small_sq_norm: float, big_sq_norm: float, b_small: float, b_big: float) -> None:
        g2, s = two_batch_estimates(small_sq_norm, big_sq_norm, b_small, b_big)
        if not (math.isfinite(g2) and math.isfinite(s)):
            return
        d = self.decay
        self.g2 = d * self.g2 + (1 - d) * g2
        self.s = d * self.s + (1 - d) * s
        self.weight = d * self.weight + (1 - d)
        self.count += 1

    @property
    def b_simple(self) -> float | None:
        if self.weight <= 0:
            return None
        g2, s = self.g2 / self.weight, self.s / self.weight
        if g2 <= 0 or s <= 0:
            return None  # the signal is below the noise of the estimate: no usable ratio yet
        return s / g2

    def state_dict(self) -> dict:
        return {"decay": self.decay, "g2": self.g2, "s": self.s, "weight": self.weight,
                "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        for k in ("decay", "g2", "s", "weight", "count"):
            setattr(self, k, d[k])


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """All gradients as one fp32 vector (zeros for parameters without a gradient)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                      for p in params])


def set_flat_grad(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n
