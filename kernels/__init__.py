"""sixn's Triton kernels, each a torch.library custom op (namespace "sixn") with a FLOP formula.

- attention(q, k, v, causal=True, sm_scale=None): FlashAttention-2-style fused attention
  (kernels/attention.py)
- linear_gelu(x, weight, bias=None): gelu(x @ weight^T + bias) with the GELU in the matmul
  epilogue (kernels/mlp.py)

Without a CUDA device the kernels run in the Triton interpreter (TRITON_INTERPRET=1 is set here,
before any kernel is defined, unless the caller set it): slow, but exact, and what the CPU tests use.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from .attention import attention  # noqa: E402
from .mlp import linear_gelu  # noqa: E402

__all__ = ["attention", "linear_gelu"]
