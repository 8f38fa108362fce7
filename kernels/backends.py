"""The one map from a model backend to the ops it runs and the matmuls it executes.

Every question "what does backend X run / execute" is answered here and nowhere else:

- `attention_op(backend)`, `mlp_up_op(backend)` and `gated_up_op(backend, mlp)`: the functions
  model.gpt calls for causal attention on (B, H, T, D) queries and (B, H_kv, T, D) keys and values
  (optionally windowed), for the up-projection with its GELU, and for the gated up-projection
  act(x W_gate^T) * (x W_up^T) of a SwiGLU / GeGLU MLP.
- `exec_spec(cfg, batch, seq_len, dtype, device, backend=None)`: the model.flops.ExecSpec of one
  training step, which model.flops.executed turns into executed FLOPs.

Backends (model.config.BACKENDS):
- "torch": the reference: attention as explicit matmuls over the full T x T square, masked
  (so FlopCounterMode sees every product), and exact cuBLAS-shaped GEMMs: ExecSpec().
- "sdpa": PyTorch's fused scaled_dot_product_attention, the speed baseline. What it executes depends
  on the kernel PyTorch picks at run time (flash, memory-efficient, cuDNN, math) and their internal
  tiling, so it is not known analytically: `exec_spec` raises UnknownExecution and the counters
  (FlopCounterMode on CUDA, Nsight Compute) must measure it.
- "triton": sixn's kernels at this shape, dtype and device: the blocked attention's tiles
  (attention.attention_exec) and the fused linear + GELU up-projection's GEMM tiles and
  save-or-recompute choice (mlp.linear_gelu_exec), or the fused SwiGLU's (swiglu.swiglu_exec). The
  other matmuls (QKV, projections, MLP down-projection, GeGLU, experts, router, LM head) stay on
  PyTorch and are counted exactly by shape.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from sixn.model.config import BACKENDS, GPTConfig
from sixn.model.flops import ExecSpec

from .attention import attention, attention_exec, attention_reference
from .mlp import linear_gelu, linear_gelu_exec, linear_gelu_reference
from .swiglu import gated_reference, swiglu, swiglu_exec


class UnknownExecution(ValueError):
    """The executed FLOPs of a backend are not known analytically (they must be measured)."""


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; supported: {', '.join(BACKENDS)}")


def _torch_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                     window: int | None = None):
    return attention_reference(q, k, v, causal=causal, upcast=False, window=window)


def _sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                    window: int | None = None):
    gqa = k.shape[1] != q.shape[1]
    if window is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    i = torch.arange(q.shape[2], device=q.device)
    rel = i[:, None] - i[None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(rel >= 0) & (rel < window),
                                          enable_gqa=gqa)


def _torch_mlp_up(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return linear_gelu_reference(x, weight, bias)


# The model's fused up-projection saves its pre-activation for backward (GPTConfig has no switch for
# it): passed explicitly to the op and to its executed-FLOP spec, so the two cannot disagree.
_MLP_UP_RECOMPUTE = False


def _triton_mlp_up(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return linear_gelu(x, weight, bias, recompute=_MLP_UP_RECOMPUTE)


_ATTENTION: dict[str, Callable] = {"torch": _torch_attention, "sdpa": _sdpa_attention,
                                   "triton": attention}
_MLP_UP: dict[str, Callable] = {"torch": _torch_mlp_up, "sdpa": _torch_mlp_up, "triton": _triton_mlp_up}


def _torch_swiglu(x, w_gate, w_up, b_gate=None, b_up=None):
    return gated_reference(x, w_gate, w_up, b_gate, b_up, act="silu")


def _torch_geglu(x, w_gate, w_up, b_gate=None, b_up=None):
    return gated_reference(x, w_gate, w_up, b_gate, b_up, act="gelu")


# (backend, mlp) -> gated up-projection; GeGLU has no fused kernel and runs on PyTorch everywhere
_GATED_UP: dict[tuple[str, str], Callable] = {
    ("torch", "swiglu"): _torch_swiglu, ("sdpa", "swiglu"): _torch_swiglu, ("triton", "swiglu"): swiglu,
    ("torch", "geglu"): _torch_geglu, ("sdpa", "geglu"): _torch_geglu, ("triton", "geglu"): _torch_geglu,
}


def attention_op(backend: str) -> Callable:
    """attention(q, k, v, causal=True) -> (B, H, T, D) for this backend."""
    _check_backend(backend)
    return _ATTENTION[backend]


def mlp_up_op(backend: str) -> Callable:
    """mlp_up(x, weight, bias) = gelu_tanh(x @ weight^T + bias) for this backend."""
    _check_backend(backend)
    return _MLP_UP[backend]


def gated_up_op(backend: str, mlp: str) -> Callable:
    """gated_up(x, w_gate, w_up, b_gate, b_up) = act(x w_gate^T + b_gate) * (x w_up^T + b_up)."""
    _check_backend(backend)
    if (backend, mlp) not in _GATED_UP:
        raise ValueError(f"no gated MLP {mlp!r}; supported: swiglu, geglu")
    return _GATED_UP[(backend, mlp)]


def exec_spec(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype,
              device: "str | torch.device", backend: str | None = None) -> ExecSpec:
    """The ExecSpec of one training step of `batch` sequences of `seq_len` tokens with the kernels of
    `backend` (default cfg.backend), in `dtype` on `device` (the triton kernels' tiles depend on both).
    Raises UnknownExecution for "sdpa"."""
    if not isinstance(cfg, GPTConfig):
        raise ValueError(f"exec_spec: cfg must be a GPTConfig, got {type(cfg).__name__}")
    for name, v in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"exec_spec: {name} must be a positive int, got {v!r}")
    if seq_len > cfg.n_ctx:
        raise ValueError(f"exec_spec: seq_len {seq_len} exceeds n_ctx={cfg.n_ctx}")
    backend = backend or cfg.backend
    _check_backend(backend)
    if backend == "torch":
        return ExecSpec(recompute=cfg.recompute)
    if backend == "sdpa":
        raise UnknownExecution(
            "the executed FLOPs of backend 'sdpa' are not known analytically: PyTorch's fused "
            "scaled_dot_product_attention picks its kernel (flash, memory-efficient, cuDNN, math) at "
            "run time and its tiling is internal; measure it with a counter instead. Analytic specs "
            "exist for backends 'torch' and 'triton'")
    dev = "cuda" if torch.device(device).type == "cuda" else "cpu"
    M = batch * seq_len
    if cfg.mlp == "gelu":
        up = linear_gelu_exec(M, cfg.d_ff, cfg.d_model, dtype, dev, recompute=_MLP_UP_RECOMPUTE)
    elif cfg.mlp == "swiglu":
        up = swiglu_exec(M, cfg.d_ff, cfg.d_model, dtype, dev)
    else:
        up = ExecSpec().mlp_up
    return ExecSpec(
        attention=attention_exec(seq_len, cfg.head_dim, dtype, dev),
        mlp_up=up,
        causal=True,
        name="triton",
        recompute=cfg.recompute,
    )


def known_exec_spec(cfg: GPTConfig, batch: int, seq_len: int, dtype: torch.dtype,
                    device: "str | torch.device", backend: str | None = None) -> ExecSpec | None:
    """exec_spec, or None where the backend's execution is not known analytically (sdpa)."""
    try:
        return exec_spec(cfg, batch, seq_len, dtype, device, backend)
    except UnknownExecution:
        return None
