"""Where sixn's kernels run, the vocabulary they share, and the checks every launcher makes.

The one switch for the Triton interpreter lives here: without a CUDA device the kernels can only run
in the interpreter, which must be chosen (TRITON_INTERPRET=1) before triton.language is first
imported; `import sixn` calls use_interpreter_without_gpu() before anything imports triton, which is
why this module never imports triton itself (the shared @triton.jit block product is in blocks.py).

Shared vocabulary of the kernel files (attention.py, mlp.py, swiglu.py):
- `Tiles(block_m, block_n, block_k, num_warps, num_stages)`: the blocks of one kernel launch. A GEMM
  kernel computes a block_m x block_n tile of its output (block_m output rows, block_n output
  columns) and walks the reduction in steps of block_k; the kernels' constexprs are BLOCK_M, BLOCK_N,
  BLOCK_K with that meaning, whichever problem dimension (M, N or K of the op) each one tiles.
  Attention: block_m query rows, block_n key rows, block_k the head dim padded to a power of two
  (the reduction of Q K^T).
- Masking flags EVEN_M / EVEN_N / EVEN_K: the block divides the length it tiles, so the loads need
  no mask; always computed by the launcher from the sizes (never by @triton.heuristics).
- `DotPolicy` / `dot_policy(dtype, device)`: how blocks.dot multiplies (PRECISION, UPCAST).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def use_interpreter_without_gpu() -> None:
    """Set TRITON_INTERPRET=1 when no CUDA device is visible, unless the caller chose already."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def interpreting() -> bool:
    """TRITON_INTERPRET is on, and triton.language's jit'd helpers were built for the interpreter
    (False when triton.language was imported before TRITON_INTERPRET was set)."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return False
    import sys
    tl = sys.modules.get("triton.language")
    if tl is None:
        return True
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction
    for name in ("zeros", "cdiv", "sigmoid", "softmax"):
        f = getattr(tl, name, None)
        if isinstance(f, InterpretedFunction):
            return True
        if isinstance(f, JITFunction):
            return False
    return True


def check_device(name: str, *tensors: torch.Tensor) -> None:
    """All tensors on one device, and a device Triton can run on here."""
    devs = {t.device for t in tensors if t is not None}
    if len(devs) > 1:
        raise ValueError(f"{name}: inputs are on different devices {sorted(map(str, devs))}; "
                         f"put them on one device")
    dev = next(iter(devs))
    if dev.type == "cuda":
        return
    if dev.type == "cpu" and interpreting():
        return
    raise ValueError(f"{name}: tensors on {dev} are not supported; supported: CUDA tensors, or CPU "
                     f"tensors in the Triton interpreter (TRITON_INTERPRET=1 before importing kernels)")


# The one dtype vocabulary of sixn: each supported torch dtype, its name and its short name.
_NAMES = {torch.float16: ("float16", "fp16"), torch.bfloat16: ("bfloat16", "bf16"),
          torch.float32: ("float32", "fp32")}
SUPPORTED_DTYPES = tuple(_NAMES)
DTYPES: dict[str, torch.dtype] = {n: dt for dt, names in _NAMES.items() for n in names}


def to_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A supported torch dtype from itself, its name ("bfloat16") or short name ("bf16")."""
    dt = dtype if isinstance(dtype, torch.dtype) else DTYPES.get(str(dtype).lower())
    if dt not in _NAMES:
        what = f"dtype {dtype} is not supported" if isinstance(dtype, torch.dtype) else \
            f"unknown dtype {dtype!r}"
        raise ValueError(f"{what}; supported: {', '.join(DTYPES)}")
    return dt


def dtype_name(dtype: str | torch.dtype) -> str:
    """"float32", "bfloat16" or "float16"."""
    return _NAMES[to_dtype(dtype)][0]


def short_dtype_name(dtype: str | torch.dtype) -> str:
    """"fp32", "bf16" or "fp16"."""
    return _NAMES[to_dtype(dtype)][1]


def check_dtype(name: str, *tensors: torch.Tensor) -> torch.dtype:
    dts = {t.dtype for t in tensors if t is not None}
    if len(dts) > 1:
        raise ValueError(f"{name}: inputs have different dtypes {sorted(map(str, dts))}; "
                         f"use one of {[str(d) for d in SUPPORTED_DTYPES]} for all")
    dt = next(iter(dts))
    if dt not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}: dtype {dt} is not supported; supported: "
                         f"{[str(d) for d in SUPPORTED_DTYPES]}")
    return dt


def check_tensors(name: str, optional: tuple[str, ...] = (), **args) -> None:
    """Each named argument is a torch.Tensor (or None, for the names in `optional`)."""
    for arg, t in args.items():
        if t is None and arg in optional:
            continue
        if not isinstance(t, torch.Tensor):
            what = "a torch.Tensor or None" if arg in optional else "a torch.Tensor"
            raise ValueError(f"{name}: {arg} must be {what}, got {type(t).__name__}")


def check_dtype_supported(name: str, dtype: torch.dtype) -> None:
    """dtype is one the kernels run (float16, bfloat16, float32)."""
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name}: dtype {dtype} is not supported; supported: "
                         f"{[str(d) for d in SUPPORTED_DTYPES]}")


def check_sizes(name: str, **sizes: int) -> None:
    """Problem sizes of a GEMM op: ints, "M" (the rows, e.g. tokens) >= 0, every other >= 1."""
    for dim, v in sizes.items():
        lo = 0 if dim == "M" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: {dim} must be an int >= {lo}, got {v!r}")


# --------------------------------------------------------------------------------------------
# Tiles and the block-product policy
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tiles:
    """Blocks of one kernel launch (see the module docstring for the meaning of m, n, k)."""
    block_m: int          # output rows per program
    block_n: int          # output columns per program
    block_k: int          # reduction block
    num_warps: int = 4
    num_stages: int = 1

    @property
    def mnk(self) -> tuple[int, int, int]:
        """(block_m, block_n, block_k): the (rows, cols, reduction) tile of model.flops.GemmExec."""
        return self.block_m, self.block_n, self.block_k


@dataclass(frozen=True)
class DotPolicy:
    """The constexprs of blocks.dot for one launch.

    precision: tl.dot's input_precision, "ieee" (full fp32 products) or "tf32" (ignored by 16-bit
    inputs). upcast: multiply bf16 blocks as fp32, in the Triton interpreter only, whose bf16 tl.dot
    is wrong in triton 3.9 (same block shapes, same FLOPs); kernels that store bf16 also round to
    nearest there under this flag, as the interpreter's fp32 -> bf16 cast truncates."""
    precision: str
    upcast: bool

    def constexprs(self) -> dict:
        """The keyword arguments of a launch: PRECISION and UPCAST."""
        return {"PRECISION": self.precision, "UPCAST": self.upcast}


def dot_policy(dtype: torch.dtype, device: "str | torch.device") -> DotPolicy:
    """The one fp32 / interpreter policy of every kernel: fp32 products in IEEE precision when
    torch.get_float32_matmul_precision() is "highest" (torch's default), TF32 otherwise, like torch's
    own matmuls; bf16 upcast off CUDA (the interpreter)."""
    ieee = dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    return DotPolicy(precision="ieee" if ieee else "tf32",
                     upcast=dtype == torch.bfloat16 and torch.device(device).type != "cuda")
