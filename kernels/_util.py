"""Helpers shared by the kernel launchers: where a kernel can run, and input checks."""

from __future__ import annotations

import os

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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


SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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
