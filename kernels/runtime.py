"""Where sixn's kernels run, and the checks every launcher makes.

The one switch for the Triton interpreter lives here: without a CUDA device the kernels can only run
in the interpreter, which must be chosen (TRITON_INTERPRET=1) before triton.language is first
imported; `import sixn` calls use_interpreter_without_gpu() before anything imports triton.
"""

from __future__ import annotations

import os

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
