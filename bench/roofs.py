"""Measured roofs of a device: dense GEMM throughput and device memory bandwidth.

- GEMM roof: C[M, N] = A[M, K] @ B[K, N] through torch.matmul (cuBLAS on a GPU) for several large
  shapes, bf16 on a GPU and fp32 on the CPU; each shape's median time comes from bench.timing.bench,
  its FLOPs from model.flops (2 M N K, EXACT_GEMM). The roof is the best shape's median TFLOP/s:
  what the device sustains on its most favourable dense product.
- Bandwidth roof: a large device-to-device copy, dst.copy_(src); bytes moved = bytes read + bytes
  written = 2 x the tensor's size, over the median time.

These are measured figures, for every device (the datasheet peaks of bench.peaks are separate); on
an unknown GPU and on the CPU they are the only roofs shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from sixn.bench.timing import bench
from sixn.model.flops import EXACT_GEMM

# (M, N, K) of the measured products
GPU_GEMM_SHAPES = ((8192, 8192, 8192), (8192, 8192, 4096), (4096, 16384, 4096))
CPU_GEMM_SHAPES = ((512, 512, 512), (1024, 1024, 1024), (2048, 512, 1024))
GPU_COPY_BYTES = 1 << 30    # 1 GiB: far past any L2
CPU_COPY_BYTES = 64 << 20   # 64 MiB: past the last-level cache of most CPUs


@dataclass(frozen=True)
class GemmRoof:
    M: int
    N: int
    K: int
    dtype: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    flops: int
    min_bytes: int      # A, B read once and C written once
    tflops: float       # at the median time

    @property
    def intensity(self) -> float:
        return self.flops / self.min_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "intensity": self.intensity}


@dataclass(frozen=True)
class Roofs:
    device: str                   # "cuda" or "cpu"
    dtype: str                    # GEMM dtype
    gemms: tuple[GemmRoof, ...]
    copy_bytes: int               # size of the copied tensor; bytes moved are twice this
    copy_median_ms: float
    copy_p20_ms: float
    copy_p80_ms: float
    notes: list[str] = field(default_factory=list)

    @property
    def gemm_flops_per_s(self) -> float:
        """The GEMM roof: the best shape's median throughput, FLOP/s."""
        return max(g.tflops for g in self.gemms) * 1e12

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return 2 * self.copy_bytes / (self.copy_median_ms / 1e3)

    @property
    def ridge_intensity(self) -> float:
        """FLOPs per byte where the two roofs meet."""
        return self.gemm_flops_per_s / self.bandwidth_bytes_per_s

    def to_dict(self) -> dict:
        return {"device": self.device, "dtype": self.dtype,
                "gemm_tflops": self.gemm_flops_per_s / 1e12,
                "bandwidth_gbs": self.bandwidth_bytes_per_s / 1e9,
                "ridge_intensity": self.ridge_intensity,
                "gemms": [g.to_dict() for g in self.gemms],
                "copy": {"bytes": self.copy_bytes, "bytes_moved": 2 * self.copy_bytes,
                         "median_ms": self.copy_median_ms, "p20_ms": self.copy_p20_ms,
                         "p80_ms": self.copy_p80_ms},
                "notes": list(self.notes)}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def measure_gemm(M: int, N: int, K: int, device: str | torch.device, dtype: torch.dtype,
                 rep_ms: float = 100) -> GemmRoof:
    """Median throughput of one (M, K) @ (K, N) product."""
    for name, v in (("M", M), ("N", N), ("K", K)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"GEMM {name} must be a positive int, got {v!r}")
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(M, K, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(K, N, device=dev, dtype=dtype, generator=gen)
    out = torch.empty(M, N, device=dev, dtype=dtype)
    t = bench(lambda: torch.matmul(a, b, out=out), dev, rep_ms=rep_ms)
    flops = EXACT_GEMM.forward_flops(M, N, K)
    nbytes = (M * K + K * N + M * N) * a.element_size()
    return GemmRoof(M, N, K, _dtype_name(dtype), t.median_ms, t.p20_ms, t.p80_ms, flops, nbytes,
                    flops / (t.median_ms / 1e3) / 1e12)


def measure_roofs(device: str | torch.device, dtype: torch.dtype | None = None,
                  shapes: tuple[tuple[int, int, int], ...] | None = None,
                  copy_bytes: int | None = None, rep_ms: float = 100) -> Roofs:
    """GEMM and copy roofs of `device` (bf16 and the GPU shapes on CUDA; fp32, CPU shapes otherwise)."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    dtype = dtype or (torch.bfloat16 if gpu else torch.float32)
    shapes = shapes or (GPU_GEMM_SHAPES if gpu else CPU_GEMM_SHAPES)
    copy_bytes = copy_bytes or (GPU_COPY_BYTES if gpu else CPU_COPY_BYTES)
    if copy_bytes <= 0:
        raise ValueError(f"copy_bytes must be positive, got {copy_bytes}")
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False  # a fp32 roof is a fp32 roof
        gemms = tuple(measure_gemm(M, N, K, dev, dtype, rep_ms) for M, N, K in shapes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    src = torch.ones(copy_bytes // 4, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src), dev, rep_ms=rep_ms)
    notes = [] if gpu else ["CPU roofs: fp32 torch.matmul and a host memory copy, measured "
                            "(no datasheet peak for a CPU)"]
    return Roofs(dev.type, _dtype_name(dtype), gemms, src.numel() * 4, t.median_ms, t.p20_ms,
                 t.p80_ms, notes)


def roof_rows(roofs: Roofs, device_name: str, peak_flops: float | None) -> list[dict]:
    """The roofs as output rows: provider "roof:gemm" (one per shape) and "roof:copy".

    They carry the keys of the training-step rows (bench.step.ROW_KEYS) with the step-only
    ones set to None; "mfu" of a GEMM row is its fraction of the datasheet peak (None without one)."""
    from sixn.bench.step import empty_row
    rows = []
    for g in roofs.gemms:
        r = empty_row()
        r.update(provider="roof:gemm", device=device_name, dtype=g.dtype,
                 shape=f"{g.M}x{g.N}x{g.K}", step_ms=g.median_ms, step_ms_p20=g.p20_ms,
                 step_ms_p80=g.p80_ms, tflops=g.tflops, intensity=g.intensity,
                 mfu=None if peak_flops is None else g.tflops * 1e12 / peak_flops)
        rows.append(r)
    r = empty_row()
    r.update(provider="roof:copy", device=device_name, dtype="float32",
             shape=f"{roofs.copy_bytes} bytes", step_ms=roofs.copy_median_ms,
             step_ms_p20=roofs.copy_p20_ms, step_ms_p80=roofs.copy_p80_ms,
             bandwidth_gbs=roofs.bandwidth_bytes_per_s / 1e9)
    rows.append(r)
    return rows
