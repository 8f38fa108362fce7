"""Datasheet peak throughput of the GPUs sixn knows, each with its source.

Every figure is the DENSE tensor-core peak in FLOP/s: NVIDIA's datasheets print the 2:4-sparsity
figure first (H100 SXM bf16 "1,979 TFLOPS*", * = with sparsity), and that figure is never used here;
the dense peak is half of it. Where the architecture whitepaper gives the dense figure directly
(H100: 989.4 bf16 at the boost clock) it is quoted.

A device is matched by torch.cuda.get_device_name(). An unknown device gets no peak (None): its
MFU is not reported and only the measured roofs (bench.roofs) are shown, never a guessed peak.
The CPU has no datasheet peak either; bench reports its measured fp32 GEMM roof instead.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch

from sixn.kernels.runtime import short_dtype_name

_TF = 1e12  # TFLOP/s -> FLOP/s


@dataclass(frozen=True)
class Peak:
    name: str            # the device as the datasheet names it
    bf16: float          # dense tensor-core FLOP/s, bf16 inputs, fp32 accumulate
    fp16: float          # dense tensor-core FLOP/s, fp16 inputs, fp32 accumulate
    tf32: float          # dense tensor-core FLOP/s, tf32
    fp32: float          # CUDA-core (non-tensor) fp32 FLOP/s
    source: str          # where the figures come from

    def for_dtype(self, dtype: torch.dtype | str) -> float:
        """Peak FLOP/s for the compute dtype of a benchmark (bf16 autocast -> bf16)."""
        try:
            key = "tf32" if dtype == "tf32" else short_dtype_name(dtype)
        except ValueError:
            raise ValueError(f"no peak for dtype {dtype!r}; supported: bf16, fp16, tf32, fp32") from None
        return getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)


_H100_WP = "NVIDIA H100 Tensor Core GPU Architecture whitepaper (v1.04), Table 1, dense figures"
_SPARSE_HALVED = "dense = half of the printed 'with sparsity' tensor figures"

H100_SXM = Peak("H100 SXM5", 989.4 * _TF, 989.4 * _TF, 494.7 * _TF, 66.9 * _TF,
                 _H100_WP + ", SXM5 column")
H100_PCIE = Peak("H100 PCIe", 756.5 * _TF, 756.5 * _TF, 378.0 * _TF, 51.2 * _TF,
                  _H100_WP + ", PCIe column")
H100_NVL = Peak("H100 NVL", 835.5 * _TF, 835.5 * _TF, 417.5 * _TF, 60.0 * _TF,
                f"NVIDIA H100 NVL datasheet, per GPU; {_SPARSE_HALVED}")
H200_SXM = Peak("H200 SXM", 989.4 * _TF, 989.4 * _TF, 494.7 * _TF, 66.9 * _TF,
                "NVIDIA H200 Tensor Core GPU datasheet, SXM column (BF16 1,979 with sparsity; the "
                "H100 SXM5's GH100 tensor cores and clock, whose whitepaper gives 989.4 dense)")
H200_NVL = Peak("H200 NVL", 835.5 * _TF, 835.5 * _TF, 417.5 * _TF, 60.0 * _TF,
                f"NVIDIA H200 Tensor Core GPU datasheet, NVL column; {_SPARSE_HALVED}")
GH200 = Peak("GH200 (H100 GPU)", 989.4 * _TF, 989.4 * _TF, 494.7 * _TF, 66.9 * _TF,
             f"NVIDIA GH200 Grace Hopper Superchip datasheet, GPU figures; {_SPARSE_HALVED}")
A100 = Peak("A100 (SXM4 / PCIe)", 312.0 * _TF, 312.0 * _TF, 156.0 * _TF, 19.5 * _TF,
            "NVIDIA A100 Tensor Core GPU datasheet, dense figures (same for 40 GB and 80 GB)")
L40S = Peak("L40S", 362.05 * _TF, 362.05 * _TF, 183.0 * _TF, 91.6 * _TF,
            f"NVIDIA L40S GPU datasheet; {_SPARSE_HALVED}")
L40 = Peak("L40", 181.05 * _TF, 181.05 * _TF, 90.5 * _TF, 90.5 * _TF,
           f"NVIDIA L40 GPU datasheet; {_SPARSE_HALVED}")
L4 = Peak("L4", 121.0 * _TF, 121.0 * _TF, 60.0 * _TF, 30.3 * _TF,
          f"NVIDIA L4 Tensor Core GPU datasheet; {_SPARSE_HALVED}")
A10 = Peak("A10", 125.0 * _TF, 125.0 * _TF, 62.5 * _TF, 31.2 * _TF,
           f"NVIDIA A10 Tensor Core GPU datasheet; {_SPARSE_HALVED}")

# (pattern on the lower-cased torch.cuda.get_device_name(), peak), first match wins: specific
# variants before the family. A name that matches none (e.g. a bare "NVIDIA H100", whose SXM / PCIe
# variant cannot be told) has no peak.
_TABLE: tuple[tuple[str, Peak], ...] = (
    (r"\bgh200\b", GH200),
    (r"\bh100\b.*\b(pcie|hbm2e)\b", H100_PCIE),   # "NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM2e"
    (r"\bh100\b.*\bnvl\b", H100_NVL),             # "NVIDIA H100 NVL"
    (r"\bh100\b.*\b(sxm\d?|hbm3)\b", H100_SXM),   # "NVIDIA H100 80GB HBM3"
    (r"\bh200\b.*\bnvl\b", H200_NVL),
    (r"\bh200\b", H200_SXM),                       # "NVIDIA H200" (SXM; the NVL says so)
    (r"\ba100\b", A100),                           # "NVIDIA A100-SXM4-80GB", "... 80GB PCIe"
    (r"\bl40s\b", L40S),
    (r"\bl40\b", L40),
    (r"\bl4\b", L4),
    (r"\ba10\b", A10),                             # not the A10G, whose clocks differ
)


def lookup(device_name: str | None) -> Peak | None:
    """The datasheet peak for a device name, or None for an unknown device (never a guess)."""
    if not device_name:
        return None
    name = device_name.lower().replace("-", " ").replace("_", " ")
    for pattern, peak in _TABLE:
        if re.search(pattern, name):
            return peak
    return None


def known_devices() -> list[str]:
    return [p.name for _, p in _TABLE]


def unknown_message(device_name: str) -> str:
    return (f"no datasheet peak for {device_name!r} (known: {', '.join(known_devices())}): "
            f"MFU and HFU are not reported, only the measured roofs")
