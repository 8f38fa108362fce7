"""How each backend of the model executes its matmuls: the model.flops.ExecSpec of a training step.

- "torch": the reference (ExecSpec()): dense T x T attention products and exact cuBLAS-shaped GEMMs.
- "triton": sixn's kernels at this shape, dtype and device: the blocked attention's tiles
  (kernels.attention.attention_exec) and the fused linear + GELU up-projection's GEMM tiles and
  save-or-recompute choice (kernels.mlp.linear_gelu_exec). The other matmuls (QKV, projections,
  MLP down-projection, LM head) stay on PyTorch and are counted exactly by shape.
- "sdpa": not available: what PyTorch's fused attention executes depends on the backend it picks at
  run time (flash, memory-efficient, cuDNN, math) and their internal tiling, so it is not known
  analytically; the counters (FlopCounterMode on CUDA, Nsight Compute) must measure it.
"""

from __future__ import annotations

import torch

from model.config import BACKENDS, GPTConfig
from model.flops import ExecSpec


def exec_spec(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype,
              device: "str | torch.device") -> ExecSpec:
    """The ExecSpec of one training step of `batch` sequences of `seq_len` tokens with
    cfg.backend's kernels, in `dtype` on `device` (the triton kernels' tiles depend on both)."""
    if not isinstance(cfg, GPTConfig):
        raise ValueError(f"exec_spec: cfg must be a GPTConfig, got {type(cfg).__name__}")
    for name, v in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"exec_spec: {name} must be a positive int, got {v!r}")
    if seq_len > cfg.n_ctx:
        raise ValueError(f"exec_spec: seq_len {seq_len} exceeds n_ctx={cfg.n_ctx}")
    backend = cfg.backend
    if backend == "torch":
        return ExecSpec()
    if backend == "sdpa":
        raise ValueError(
            "exec_spec: the executed FLOPs of backend 'sdpa' are not known analytically: PyTorch's "
            "fused scaled_dot_product_attention picks its kernel (flash, memory-efficient, cuDNN, "
            "math) at run time and its tiling is internal; measure it with a counter instead. "
            "Analytic specs exist for backends 'torch' and 'triton'")
    if backend == "triton":
        from kernels.attention import attention_exec
        from kernels.mlp import linear_gelu_exec
        return ExecSpec(
            attention=attention_exec(seq_len, cfg.head_dim, dtype, device),
            mlp_up=linear_gelu_exec(batch * seq_len, cfg.d_ff, cfg.d_model, dtype, device),
            causal=True,
            name="triton",
        )
    raise ValueError(f"exec_spec: unknown backend {backend!r}; supported: {', '.join(BACKENDS)}")
