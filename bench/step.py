"""Timed training steps: tokens/s, model TFLOP/s, MFU, HFU and peak memory per preset and provider.

One step is forward (bf16 autocast on a GPU, fp32 on the CPU), loss, backward and an AdamW update
on a random token batch. Warm-up steps (compilation, autotuning, allocator growth) are run first and
not timed; each timed step ends with a device synchronisation, and the median and the 20/80
quantiles over the timed steps come from bench.timing.bench.

Providers (model backends, all in the same run so they can be compared):
  triton               model backend "triton" (sixn's kernels); GPU only: in the Triton interpreter
                       on a CPU it is far too slow to benchmark, so it is not offered there
  torch-sdpa-eager     backend "sdpa": PyTorch's fused scaled_dot_product_attention, eager
  torch-sdpa-compile   backend "sdpa" under torch.compile
  torch                backend "torch": the explicit-matmul reference (the CPU default)

FLOPs per token (all from model.flops): model FLOPs under the "palm" and "kaplan_6N_context"
conventions for MFU, executed FLOPs (model.flops.executed with kernels.backends.exec_spec for triton,
the default ExecSpec() for the torch reference) for HFU. The executed count of PyTorch's fused
attention is not known analytically, so HFU is None for the sdpa providers. MFU and HFU need a
datasheet peak (bench.peaks); without one (CPU, unknown GPU) they are None and the model FLOP/s
is set against the measured GEMM roof instead (mfu_vs_measured_roof).
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from collections import defaultdict
from typing import Callable, Iterable

import torch

from sixn.bench.timing import bench, synchronize
from sixn.kernels.backends import known_exec_spec
from sixn.model.config import GPTConfig
from sixn.model.flops import accounting, executed
from sixn.model.memory import InsufficientMemory, bytes_per_activation, check_training_memory
from sixn.model.presets import get_preset

# provider -> (model backend, torch.compile)
PROVIDERS: dict[str, tuple[str, bool]] = {
    "triton": ("triton", False),
    "torch-sdpa-eager": ("sdpa", False),
    "torch-sdpa-compile": ("sdpa", True),
    "torch": ("torch", False),
}
GPU_PROVIDERS = ("triton", "torch-sdpa-eager", "torch-sdpa-compile")
CPU_PROVIDERS = ("torch", "torch-sdpa-eager")
GPU_PRESETS = ("ladder-14m", "ladder-25m", "gpt2-small", "ladder-302m")
CPU_PRESETS = ("tiny", "ladder-786k")
CPU_MAX_SEQ_LEN = 256          # CPU default sequence length cap (presets carry n_ctx 1024)
GPU_TOKENS_PER_STEP = 32768    # GPU default batch = this / seq_len
CPU_BATCH = 4
DEFAULT_STEPS = {"cuda": 20, "cpu": 5}
DEFAULT_WARMUP = {"cuda": 5, "cpu": 2}
PROFILE_STEPS = 3

# Every output row (training step, DDP step and roof rows) has these keys, in this order.
ROW_KEYS = (
    "preset", "provider", "backend", "compiled", "device", "figures", "dtype", "world_size",
    "batch", "seq_len", "shape", "n_params", "N", "steps", "warmup",
    "step_ms", "step_ms_p20", "step_ms_p80",
    "tokens_per_s", "tokens_per_s_p20", "tokens_per_s_p80", "tokens_per_s_per_device",
    "flops_per_token", "flops_per_token_kaplan_6N_context", "flops_per_token_executed",
    "tflops", "tflops_kaplan_6N_context", "tflops_executed",
    "mfu", "mfu_kaplan_6N_context", "hfu", "peak_tflops", "peak_source",
    "measured_roof_tflops", "mfu_vs_measured_roof", "intensity", "bandwidth_gbs",
    "peak_mem_gb", "error",
)

NOTE_CPU = ("CPU figures: fp32 torch backend on the CPU, for testing the pipeline; no datasheet "
            "peak, so MFU/HFU are null and model FLOP/s is set against the measured fp32 GEMM roof")
NOTE_TRITON_CPU = ("triton provider not run on the CPU: its kernels would run in the Triton "
                   "interpreter, far too slow to benchmark")
NOTE_SDPA_HFU = ("HFU is null for torch-sdpa-*: the executed FLOPs of PyTorch's fused attention "
                 "kernels are not known analytically (measure them with `sixn flops --measure`)")


def empty_row() -> dict:
    return dict.fromkeys(ROW_KEYS)


def _progress(msg: str) -> None:
    print(f"[sixn bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Defaults and checks
# ------------------------------------------------------------------------------------------------

def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; supported: auto, cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA GPU; use --device cpu")
    return torch.device(device)


def default_presets(device: torch.device) -> tuple[str, ...]:
    return GPU_PRESETS if device.type == "cuda" else CPU_PRESETS


def default_providers(device: torch.device) -> tuple[str, ...]:
    return GPU_PROVIDERS if device.type == "cuda" else CPU_PROVIDERS


def check_providers(providers: Iterable[str], device: torch.device) -> list[str]:
    out = []
    for p in providers:
        if p not in PROVIDERS:
            raise ValueError(f"unknown provider {p!r}; supported: {', '.join(PROVIDERS)}")
        if p == "triton" and device.type != "cuda":
            raise ValueError(f"{NOTE_TRITON_CPU}; on the CPU use: "
                             f"{', '.join(x for x in PROVIDERS if x != 'triton')}")
        if p not in out:
            out.append(p)
    return out


def step_shape(cfg: GPTConfig, device: torch.device, batch: int | None,
               seq_len: int | None) -> tuple[int, int]:
    """(batch, seq_len) of a step: given values, else the device's defaults."""
    T = seq_len or (cfg.n_ctx if device.type == "cuda" else min(cfg.n_ctx, CPU_MAX_SEQ_LEN))
    if T > cfg.n_ctx:
        raise ValueError(f"seq_len {T} exceeds preset {cfg.name!r}'s n_ctx={cfg.n_ctx}")
    if T <= 0:
        raise ValueError(f"seq_len must be positive, got {T}")
    B = batch or (max(1, GPU_TOKENS_PER_STEP // T) if device.type == "cuda" else CPU_BATCH)
    if B <= 0:
        raise ValueError(f"batch must be positive, got {B}")
    return B, T


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ------------------------------------------------------------------------------------------------
# One training step
# ------------------------------------------------------------------------------------------------

def build_step(cfg: GPTConfig, provider: str, device: torch.device, batch: int, seq_len: int,
               seed: int = 0, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
               data_seed: int | None = None):
    """A closure running one training step of `provider`'s model, and the model.

    `wrap` (e.g. DistributedDataParallel) is applied before torch.compile."""
    backend, compiled = PROVIDERS[provider]
    from sixn.model.gpt import GPT
    torch.manual_seed(seed)
    model = GPT(cfg.replace(backend=backend)).to(device)
    fwd = wrap(model) if wrap is not None else model
    if compiled:
        fwd = torch.compile(fwd)
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=cuda or None)
    gen = torch.Generator(device="cpu").manual_seed(seed if data_seed is None else data_seed)
    x = torch.randint(0, cfg.n_vocab, (batch, seq_len + 1), generator=gen).to(device)
    idx, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step() -> None:
        with autocast():
            _, loss = fwd(idx, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model


def time_steps(step: Callable[[], None], device: torch.device, steps: int):
    """Exactly `steps` timed steps, each ended by a device synchronisation (bench.timing's
    perf_counter path, so the count is fixed: DDP ranks must run the same number of steps)."""
    def synced() -> None:
        step()
        synchronize(device)
    # warmup_ms=0 still runs one untimed call first; rep_ms=0 with min = max reps: exactly `steps`
    return bench(synced, "cpu", warmup_ms=0, rep_ms=0, min_reps=steps, max_reps=steps)


# ------------------------------------------------------------------------------------------------
# What limits a step: time per kernel family from the profiler
# ------------------------------------------------------------------------------------------------

# (family, substrings of a lower-cased kernel or aten op name), first match wins
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mlp: fused linear+gelu (triton)", ("linear_gelu",)),
    ("attention", ("attn", "attention", "flash", "fmha", "sdpa", "scaled_dot_product")),
    ("optimizer (AdamW)", ("adam", "multi_tensor", "foreach")),
    ("gemm (cuBLAS / aten mm)", ("gemm", "nvjet", "xmma", "cutlass", "cublas", "sm90_", "sm80_",
                                 "ampere_", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                 "aten::linear", "aten::baddbmm")),
    ("layernorm", ("layer_norm", "layernorm")),
    ("softmax / cross-entropy", ("softmax", "cross_entropy", "nll_loss")),
    ("gelu", ("gelu",)),
    ("embedding / gather", ("embedding", "index_select", "indexselect", "gather", "scatter",
                            "index_put", "indexing")),
    ("fused elementwise (inductor triton)", ("triton_",)),
    ("copy / cast", ("copy", "cast", "convert", "aten::to")),
    ("elementwise / reduce", ("elementwise", "vectorized", "reduce", "aten::add", "aten::mul",
                              "aten::fill", "aten::sum", "aten::masked_fill", "aten::where",
                              "aten::div", "aten::sub", "aten::zero", "aten::sqrt", "aten::lerp",
                              "aten::addc")),
)


def kernel_family(name: str) -> str:
    n = name.lower()
    for family, keys in _FAMILIES:
        if any(k in n for k in keys):
            return family
    return "other"


def profile_step(step: Callable[[], None], device: torch.device,
                 steps: int = PROFILE_STEPS) -> dict[str, float]:
    """Milliseconds per step by kernel family: GPU kernels' self time on CUDA; on the CPU the self
    time of aten ops and of the optimizer step's own code. Largest first."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    fam: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if cuda:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = e.self_device_time_total
        else:
            if not e.key.startswith(("aten::", "Optimizer.")):  # ops, and the optimizer's own time
                continue
            us = e.self_cpu_time_total
        fam[kernel_family(e.key)] += us / 1e3 / steps
    return dict(sorted(fam.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------------
# FLOPs and rows
# ------------------------------------------------------------------------------------------------

def flops_per_token(provider: str, cfg: GPTConfig, batch: int, seq_len: int,
                    device: torch.device) -> dict[str, float | None]:
    acc = accounting(cfg, seq_len).training_per_token
    spec = known_exec_spec(cfg, batch, seq_len, compute_dtype(device), device,
                           backend=PROVIDERS[provider][0])
    ex = None if spec is None else executed(cfg, batch, seq_len, spec).total / (batch * seq_len)
    return {"palm": acc["palm"], "kaplan_6N_context": acc["kaplan_6N_context"], "executed": ex}


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def make_row(*, preset: str, provider: str, device_name: str, device: torch.device, batch: int,
             seq_len: int, n_params: int, N: int, steps: int, warmup: int, step_ms: float,
             step_ms_p20: float, step_ms_p80: float, fpt: dict, peak_flops: float | None,
             peak_source: str | None, measured_roof: float | None, peak_mem_gb: float | None,
             world_size: int = 1) -> dict:
    """One output row; every FLOP/s and utilisation figure derives from tokens/s x FLOPs/token."""
    backend, compiled = PROVIDERS[provider]
    tokens = batch * seq_len * world_size          # tokens per step, all devices
    tps = tokens / (step_ms / 1e3)
    peak_all = None if peak_flops is None else peak_flops * world_size
    roof_all = None if measured_roof is None else measured_roof * world_size
    flops = tps * fpt["palm"]
    flops_ctx = tps * fpt["kaplan_6N_context"]
    flops_ex = None if fpt["executed"] is None else tps * fpt["executed"]
    r = empty_row()
    r.update(
        preset=preset, provider=provider, backend=backend, compiled=compiled, device=device_name,
        figures="GPU (bf16 autocast)" if device.type == "cuda" else "CPU (fp32)",
        dtype="bf16-autocast" if device.type == "cuda" else "float32", world_size=world_size,
        batch=batch, seq_len=seq_len, n_params=n_params, N=N, steps=steps, warmup=warmup,
        step_ms=step_ms, step_ms_p20=step_ms_p20, step_ms_p80=step_ms_p80,
        tokens_per_s=tps,
        tokens_per_s_p20=tokens / (step_ms_p80 / 1e3),   # slow steps give the low throughput
        tokens_per_s_p80=tokens / (step_ms_p20 / 1e3),
        tokens_per_s_per_device=tps / world_size,
        flops_per_token=fpt["palm"], flops_per_token_kaplan_6N_context=fpt["kaplan_6N_context"],
        flops_per_token_executed=fpt["executed"],
        tflops=flops / 1e12, tflops_kaplan_6N_context=flops_ctx / 1e12,
        tflops_executed=None if flops_ex is None else flops_ex / 1e12,
        mfu=_div(flops, peak_all), mfu_kaplan_6N_context=_div(flops_ctx, peak_all),
        hfu=_div(flops_ex, peak_all),
        peak_tflops=None if peak_flops is None else peak_flops / 1e12, peak_source=peak_source,
        measured_roof_tflops=None if measured_roof is None else measured_roof / 1e12,
        mfu_vs_measured_roof=_div(flops, roof_all), peak_mem_gb=peak_mem_gb)
    return r


def error_row(preset: str, provider: str, device_name: str, batch: int, seq_len: int,
              error: str) -> dict:
    r = empty_row()
    backend, compiled = PROVIDERS[provider]
    r.update(preset=preset, provider=provider, backend=backend, compiled=compiled,
             device=device_name, batch=batch, seq_len=seq_len, error=error)
    return r


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_step_memory(cfg: GPTConfig, provider: str, device: torch.device, batch: int,
                      seq_len: int) -> None:
    """InsufficientMemory (a ValueError) when a training step of `provider` at this shape would not
    fit the device's free memory (model.memory's estimate), before anything is allocated."""
    backend = PROVIDERS[provider][0]
    check_training_memory(cfg.replace(backend=backend), batch, seq_len, device,
                          activation_bytes=bytes_per_activation("bfloat16" if device.type == "cuda"
                                                                else "float32"),
                          what=f"preset {cfg.name} with provider {provider}")


def _measure_one(cfg, provider, device, B, T, steps, warmup, profile):
    check_step_memory(cfg, provider, device, B, T)
    step, model = build_step(cfg, provider, device, B, T)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    synchronize(device)
    t = time_steps(step, device, steps)
    mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    prof = profile_step(step, device) if profile else None
    n_params = sum(p.numel() for p in model.parameters())
    return t, mem, prof, n_params


TIME_BUDGET_SPENT = "not run: the time budget was spent"


def run_bench(presets: Iterable[str], providers: Iterable[str], device: str | torch.device,
              steps: int | None = None, batch: int | None = None, seq_len: int | None = None,
              warmup: int | None = None, peak_flops: float | None = None,
              peak_source: str | None = None, measured_roof: float | None = None,
              device_name: str | None = None, profile: bool = False,
              progress: Callable[[str], None] | None = _progress,
              on_row: Callable[[dict], None] | None = None,
              deadline: float | None = None) -> list[dict]:
    """Time training steps of every (preset, provider) on `device`; one row each (see ROW_KEYS).

    A GPU out-of-memory halves the batch and retries (down to 1), so the default presets run
    "where memory allows"; any other failure of a pair is reported in its row's "error" and the
    run goes on. With profile=True each row also has "profile": ms per step by kernel family.
    on_row(row) is called as each row is made; a pair not started before `deadline`
    (time.monotonic()) is not run and gets an error row saying so."""
    from sixn.bench.results import device_name as _devname
    dev = resolve_device(device) if isinstance(device, str) else device
    providers = check_providers(providers, dev)
    steps = DEFAULT_STEPS[dev.type] if steps is None else steps
    warmup = DEFAULT_WARMUP[dev.type] if warmup is None else warmup
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    cfgs = [get_preset(p) for p in presets]
    shapes = [step_shape(cfg, dev, batch, seq_len) for cfg in cfgs]
    name = device_name or _devname(dev)
    say = progress or (lambda msg: None)
    rows: list[dict] = []
    total = len(cfgs) * len(providers)
    k = 0
    def emit(row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for cfg, (B, T) in zip(cfgs, shapes):
        for provider in providers:
            k += 1
            b = B
            if deadline is not None and time.monotonic() > deadline:
                emit(error_row(cfg.name, provider, name, b, T, TIME_BUDGET_SPENT))
                say(f"{k}/{total} {cfg.name} {provider}: not run ({TIME_BUDGET_SPENT})")
                continue
            while True:
                say(f"{k}/{total} {cfg.name} {provider}: batch {b} x {T} tokens, {warmup} warm-up "
                    f"+ {steps} timed steps ...")
                result, failure = None, None
                try:
                    result = _measure_one(cfg, provider, dev, b, T, steps, warmup, profile)
                except InsufficientMemory as e:  # the estimate, before allocating anything
                    failure = str(e)
                    if 1 <= e.largest_batch < b:
                        _free(dev)
                        say(f"{k}/{total} {cfg.name} {provider}: batch {b} would not fit the free "
                            f"memory, trying {e.largest_batch}")
                        b = e.largest_batch
                        continue
                except torch.OutOfMemoryError:
                    failure = "oom"
                except Exception as e:  # a provider that fails (e.g. compile) must not end the run
                    failure = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                _free(dev)  # outside the handler, so the failed step's tensors can go
                if failure == "oom" and b > 1:
                    say(f"{k}/{total} {cfg.name} {provider}: out of memory at batch {b}, trying {b // 2}")
                    b //= 2
                    continue
                if failure is not None:
                    failure = "out of memory at batch 1" if failure == "oom" else failure
                    emit(error_row(cfg.name, provider, name, b, T, failure))
                    say(f"{k}/{total} {cfg.name} {provider}: FAILED ({failure})")
                    break
                t, mem, prof, n_params = result
                row = make_row(preset=cfg.name, provider=provider, device_name=name, device=dev,
                               batch=b, seq_len=T, n_params=n_params, N=accounting(cfg, T).N,
                               steps=steps, warmup=warmup, step_ms=t.median_ms,
                               step_ms_p20=t.p20_ms, step_ms_p80=t.p80_ms,
                               fpt=flops_per_token(provider, cfg, b, T, dev), peak_flops=peak_flops,
                               peak_source=peak_source, measured_roof=measured_roof,
                               peak_mem_gb=mem)
                if prof is not None:
                    row["profile"] = prof
                emit(row)
                mfu = "" if row["mfu"] is None else f", MFU {100 * row['mfu']:.1f}%"
                say(f"{k}/{total} {cfg.name} {provider}: {row['tokens_per_s']:,.0f} tok/s, "
                    f"{row['tflops']:.3g} TFLOP/s{mfu}")
                break
    return rows


# ------------------------------------------------------------------------------------------------
# sixn's H100 targets
# ------------------------------------------------------------------------------------------------

TARGET_GEMM_TFLOPS = 760.0
TARGET_MFU_PALM = 0.45
TARGET_PRESET = "gpt2-small"
TARGET_VS_EAGER = 1.15
TARGET_VS_COMPILE = 1.0


def _find(rows, preset, provider):
    for r in rows:
        if (r.get("preset") == preset and r.get("provider") == provider
                and r.get("world_size") in (1, None) and r.get("tokens_per_s") is not None):
            return r
    return None


def check_targets(rows: list[dict], gemm_roof_tflops: float | None) -> list[dict]:
    """sixn's H100 targets, each with its measured value and met (None: not measured)."""
    def target(name, value, goal, detail):
        return {"target": name, "value": value, "goal": goal,
                "met": None if value is None else bool(value >= goal), "detail": detail}

    out = [target("measured GEMM roof (TFLOP/s)", gemm_roof_tflops, TARGET_GEMM_TFLOPS,
                  "best bf16 cuBLAS shape, median time")]
    tri = _find(rows, TARGET_PRESET, "triton")
    eager = _find(rows, TARGET_PRESET, "torch-sdpa-eager")
    comp = _find(rows, TARGET_PRESET, "torch-sdpa-compile")
    out.append(target(f"{TARGET_PRESET} triton MFU (palm, vs the datasheet peak)",
                      None if tri is None else tri["mfu"], TARGET_MFU_PALM,
                      "" if tri is None else f"kaplan_6N_context MFU beside it: "
                      f"{tri['mfu_kaplan_6N_context']}"))
    for base, goal, label in ((eager, TARGET_VS_EAGER, "torch eager + SDPA"),
                              (comp, TARGET_VS_COMPILE, "torch.compile of the reference")):
        ratio = None if tri is None or base is None else tri["tokens_per_s"] / base["tokens_per_s"]
        out.append(target(f"{TARGET_PRESET} triton tokens/s over {label}", ratio, goal,
                          "same run"))
    return out


def fmt_profile(prof: dict[str, float], step_ms: float | None = None) -> str:
    total = sum(prof.values())
    lines = [f"    {fam:<38} {ms:9.3f} ms/step  {100 * ms / total if total else 0:5.1f}%"
             for fam, ms in prof.items()]
    if step_ms is not None and math.isfinite(step_ms):
        lines.append(f"    {'(sum of kernel time / wall step time)':<38} {total:9.3f} / {step_ms:.3f} ms")
    return "\n".join(lines)
