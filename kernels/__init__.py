"""sixn's Triton kernels, each a torch.library custom op (namespace "sixn") with a FLOP formula.

- attention(q, k, v, causal=True, sm_scale=None): FlashAttention-2-style fused attention
  (attention.py)
- linear_gelu(x, weight, bias=None, recompute=False): gelu(x @ weight^T + bias) with the GELU in
  the matmul epilogue (mlp.py)
- swiglu(x, w_gate, w_up, b_gate=None, b_up=None): silu(x w_gate^T + b_gate) * (x w_up^T + b_up),
  both GEMMs in one kernel (swiglu.py)

Shared by all three: runtime.py (tile config `Tiles`, the fp32 / interpreter policy `dot_policy`,
the launchers' checks) and blocks.py (the one block product `dot`).

Without a CUDA device the kernels run in the Triton interpreter (kernels/runtime.py sets
TRITON_INTERPRET=1 before any kernel is defined, unless the caller set it): slow, but exact, and what
the CPU tests use.
"""

from . import runtime

runtime.use_interpreter_without_gpu()

from .attention import attention  # noqa: E402
from .mlp import linear_gelu  # noqa: E402

__all__ = ["attention", "linear_gelu"]
