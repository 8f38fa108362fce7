"""Three counters of the FLOPs a training step executes, behind one interface.

    count_step(cfg, batch, seq_len, counter="dispatch", backend=None, device=None, dtype=None)
        -> StepCount(total, by_group, by_kernel, raw, ...)

One training step is model(idx, targets) then loss.backward(): forward and backward, no optimizer.
`total` is the matmul FLOPs executed in that step (2 per multiply-add), `by_group` splits it over
model.flops.GROUPS (Kaplan's rows: qkv, attention, project, feedforward, de-embed; "other" holds
matmul work found outside them, normally 0). The analytic side is model.flops.executed(cfg, batch,
seq_len, spec) with the spec of the backend's kernels (sixn.kernels.backends.exec_spec).

- dispatch: torch.utils.flop_counter.FlopCounterMode. Formula-based per dispatched op on the real
  shapes, sixn's custom ops counted by the formulas they register. Attribution by module: the
  counter's module hierarchy (FQNs such as "GPT.blocks.0.attn.qkv") gives each op's innermost
  module, which names its group. The torch backend defaults to the meta device (shapes only: the
  same ops are dispatched, nothing is computed), so any model size counts in about a second.
- interpreter: the Triton interpreter on the CPU (TRITON_INTERPRET=1). Every tl.dot that a kernel
  actually executes adds 2 M N K for its block shapes, so causal block skipping, padding of ragged
  tiles and the backward recompute are counted as they run; what runs on the PyTorch side (cuBLAS
  on a GPU) is counted by FlopCounterMode with sixn's own ops taken out (their real work is the
  dots). For the torch backend there are no kernels and it equals dispatch (on real CPU tensors).
- ncu: Nsight Compute hardware counters on an NVIDIA GPU (bench.counters.ncu): tensor-core FLOPs per kernel
  of one warmed-up, NVTX-marked step, attributed to groups by NVTX module ranges.

A counter that cannot count raises CounterError saying why and what to do; none of them ever falls
back to an analytic number.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sixn.model.config import GPTConfig
from sixn.kernels.backends import exec_spec
from sixn.kernels.runtime import DTYPES, dtype_name, to_dtype  # noqa: F401  (DTYPES re-exported)
from sixn.model.flops import GROUPS, ExecSpec, executed, model_flops_per_step

COUNTERS = ("dispatch", "interpreter", "ncu")
COUNTER_BACKENDS = ("torch", "triton")


class CounterError(RuntimeError):
    """A counter cannot count here (tool missing, no permission, no GPU, hook point missing ...)."""


@dataclass
class StepCount:
    counter: str
    backend: str
    batch: int
    seq_len: int
    device: str
    dtype: str
    total: int                                   # matmul FLOPs executed in one fwd+bwd step
    by_group: dict[str, int]                     # over model.flops.GROUPS
    by_kernel: list[dict] = field(default_factory=list)  # {name, group, flops}
    raw: Any = None                              # the counter's raw output, saved beside summaries
    extra: dict = field(default_factory=dict)    # counter-specific figures (CUDA-core FLOPs, ...)

    def to_dict(self, with_raw: bool = False) -> dict:
        d = {k: getattr(self, k) for k in ("counter", "backend", "batch", "seq_len", "device", "dtype",
                                           "total", "by_group", "by_kernel", "extra")}
        if with_raw:
            d["raw"] = self.raw
        return d


# ------------------------------------------------------------------------------------------------
# Shared helpers
# ------------------------------------------------------------------------------------------------

def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """The dtype to count in: `dtype` (a torch dtype or its name), else bf16 on CUDA, fp32 on the CPU."""
    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return to_dtype(dtype)


def _check_args(cfg: GPTConfig, batch: int, seq_len: int, counter: str, backend: str) -> None:
    if counter not in COUNTERS:
        raise ValueError(f"unknown counter {counter!r}; supported: {', '.join(COUNTERS)}")
    if backend not in COUNTER_BACKENDS:
        raise ValueError(f"backend {backend!r} not supported by the counters; supported: "
                         f"{', '.join(COUNTER_BACKENDS)} (sdpa's attention is invisible to "
                         f"FlopCounterMode on the CPU)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= cfg.n_ctx:
        raise ValueError(f"seq_len must be an int in [1, n_ctx={cfg.n_ctx}], got {seq_len!r}")


def build_step(cfg: GPTConfig, batch: int, seq_len: int, device: str, dtype: torch.dtype,
               seed: int = 0):
    """A model and a closure that runs one training step (forward with loss, then backward)."""
    from sixn.model.gpt import GPT
    torch.manual_seed(seed)
    with torch.device(device):
        model = GPT(cfg)
    model = model.to(dtype=dtype)
    if device == "meta":
        idx = torch.empty(batch, seq_len, dtype=torch.long, device="meta")
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        idx = torch.randint(0, cfg.n_vocab, (batch, seq_len), generator=g).to(device)

    def step():
        _, loss = model(idx, idx)
        loss.backward()
    return model, step


class StepProgress:
    """A heartbeat on stderr while one counted step runs long (a model of thousands of layers on
    the meta device, the Triton interpreter on a large shape): after `first_s` seconds and then
    every `every_s`, one line with the phase (building the model, forward block i of L, backward
    block i of L) and the time so far; nothing for a count that ends sooner. Blocks are followed
    by forward hooks and by hooks on their outputs' gradients, which add no operation to the step
    (the counts are unchanged)."""

    def __init__(self, what: str, n_layer: int, stream=None, first_s: float = 5.0,
                 every_s: float = 15.0):
        self.what, self.n_layer = what, n_layer
        self.stream = stream or sys.stderr
        self.first_s, self.every_s = first_s, every_s
        self.phase = "building the model"
        self.fwd = self.bwd = 0
        self.printed = 0
        self._stop = threading.Event()
        self._hooks: list = []

    def __enter__(self) -> "StepProgress":
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for h in self._hooks:
            h.remove()
        if self.printed and exc[0] is None:
            self._say(f"done in {time.monotonic() - self.t0:.0f} s")

    def watch(self, model: torch.nn.Module) -> None:
        """Follow the forward and backward of model.blocks (when it has them)."""
        self.phase = "forward"
        for block in getattr(model, "blocks", []):
            self._hooks.append(block.register_forward_hook(self._forward_done))

    def _forward_done(self, module, args, out) -> None:
        self.fwd += 1
        t = out[0] if isinstance(out, tuple) else out
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.register_hook(self._backward_done)

    def _backward_done(self, grad):
        self.bwd += 1
        return None

    def status(self) -> str:
        if self.phase != "forward":
            return self.phase
        if self.bwd:
            return f"backward, block {self.bwd} of {self.n_layer}"
        if self.fwd < self.n_layer:
            return f"forward, block {self.fwd + 1} of {self.n_layer}"
        return "head, loss and the start of the backward"

    def _say(self, msg: str) -> None:
        print(f"  [{self.what}] {msg}", file=self.stream, flush=True)
        self.printed += 1

    def _beat(self) -> None:
        wait = self.first_s
        while not self._stop.wait(wait):
            self._say(f"still counting: {self.status()} ({time.monotonic() - self.t0:.0f} s so far)")
            wait = self.every_s


def group_of_module(fqn: str) -> str:
    """The group of FLOPs executed with `fqn` as the innermost module: 'GPT.blocks.3.attn.qkv' ->
    qkv, '....attn.proj' -> project, '....attn' -> attention (the products between the linears),
    '....mlp' or below -> feedforward, the model root itself -> de-embed (its only product is the
    head's F.linear); anything else -> other."""
    parts = fqn.split(".")
    if fqn == "Global":
        return "other"
    if len(parts) == 1:
        return "de-embed"
    if "attn" in parts:
        i = parts.index("attn")
        sub = parts[i + 1] if i + 1 < len(parts) else None
        return {None: "attention", "qkv": "qkv", "proj": "project"}.get(sub, "other")
    if "mlp" in parts:
        return "feedforward"
    return "other"


def exclusive_counts(flop_counts: dict[str, dict[Any, int]]) -> dict[str, dict[str, int]]:
    """FlopCounterMode.get_flop_counts() counts every op in each enclosing module; subtract the
    children to get what each module ran itself ({fqn: {op name: flops}})."""
    keys = set(flop_counts)

    def parent(k: str) -> str | None:
        if k == "Global":
            return None
        parts = k.split(".")
        for n in range(len(parts) - 1, 0, -1):
            p = ".".join(parts[:n])
            if p in keys:
                return p
        return "Global" if "Global" in keys else None

    excl: dict[str, dict[str, int]] = {k: {str(op): int(v) for op, v in d.items()}
                                       for k, d in flop_counts.items()}
    for k, d in flop_counts.items():
        p = parent(k)
        if p is None:
            continue
        for op, v in d.items():
            excl[p][str(op)] = excl[p].get(str(op), 0) - int(v)
    return {k: {op: v for op, v in d.items() if v} for k, d in excl.items()}


def attribute(flop_counts: dict[str, dict[Any, int]], skip_op=lambda op: False
              ) -> tuple[dict[str, int], list[dict]]:
    """(by_group, by_kernel) from a FlopCounterMode hierarchy; ops with skip_op(name) left out."""
    by_group = {g: 0 for g in GROUPS}
    by_kernel = []
    # Everything under a block's ".mlp" is feed-forward work: its submodules (experts, router) are
    # dropped before taking exclusive counts, since FlopCounterMode's backward module tracking may
    # credit one expert's gradient products to a sibling expert (same group, wrong child).
    flop_counts = {k: v for k, v in flop_counts.items()
                   if "mlp" not in k.split(".") or k.split(".")[-1] == "mlp"}
    for fqn, ops in sorted(exclusive_counts(flop_counts).items()):
        g = group_of_module(fqn)
        for op, v in sorted(ops.items()):
            if skip_op(op):
                continue
            if v < 0:
                raise CounterError(f"FlopCounterMode's module hierarchy is inconsistent at {fqn} "
                                   f"({op}: {v}); cannot attribute FLOPs to groups")
            by_group[g] += v
            by_kernel.append({"name": f"{fqn}:{op}", "group": g, "flops": v})
    return by_group, by_kernel


def _is_sixn_op(op_name: str) -> bool:
    return op_name.startswith("sixn.") or op_name.startswith("sixn::")



def analytic_executed(cfg: GPTConfig, sc: StepCount) -> tuple[dict[str, int], ExecSpec]:
    dev = "cpu" if sc.device == "meta" else sc.device
    spec = exec_spec(cfg, sc.batch, sc.seq_len, DTYPES[sc.dtype], dev, backend=sc.backend)
    ex = executed(cfg, sc.batch, sc.seq_len, spec)
    return {g: v for g, v in ex.by_group().items() if g != "other"}, spec


def compare(sc: StepCount, cfg: GPTConfig) -> dict:
    """Measured against analytic: the summary that `sixn flops --measure` prints and saves."""
    cfg = cfg.replace(backend=sc.backend)
    analytic, spec = analytic_executed(cfg, sc)
    steps = {conv: model_flops_per_step(cfg, sc.batch, sc.seq_len, conv)
             for conv in ("kaplan_6N", "kaplan_6N_context", "palm", "full_model")}
    a_total = sum(analytic.values())
    return {
        "counter": sc.counter, "backend": sc.backend, "device": sc.device, "dtype": sc.dtype,
        "batch": sc.batch, "seq_len": sc.seq_len, "config": cfg.to_dict(), "spec": spec.name,
        "measured_total": int(sc.total), "analytic_executed_total": int(a_total),
        "ratio": sc.total / a_total if a_total else None,
        "model_flops_total": steps["full_model"],
        "kaplan_6N_total": steps["kaplan_6N"], "kaplan_6N_context_total": steps["kaplan_6N_context"],
        "palm_total": steps["palm"],
        "by_group": dict(sc.by_group), "analytic_executed": analytic,
        "by_kernel": sc.by_kernel, "extra": sc.extra,
    }


def save_raw(sc: StepCount, stem: str | Path, prov: dict | None = None) -> Path:
    """The counter's raw output beside a summary: <stem>.json (and <stem>.csv for ncu's CSV)."""
    from sixn.bench.results import atomic_write_text, write_json
    stem = Path(stem)
    raw = sc.raw
    if isinstance(raw, dict) and isinstance(raw.get("csv"), str):
        atomic_write_text(stem.with_suffix(".csv"), raw["csv"])
        raw = {k: v for k, v in raw.items() if k != "csv"}
        raw["csv_file"] = stem.with_suffix(".csv").name
    path = stem.with_suffix(".json")
    write_json(path, {"counter": sc.counter, "backend": sc.backend, "batch": sc.batch,
                      "seq_len": sc.seq_len, "device": sc.device, "dtype": sc.dtype, "raw": raw}, prov)
    return path
