"""How much memory a training step of a model needs, and whether a device has it: checked before
anything is allocated, so that a batch too large is a clear error instead of a process the kernel
kills (CPU) or an out-of-memory exception deep inside a step (GPU).

The estimate (bytes), for P parameters (model.flops.param_counts(cfg).total), batch B, sequence
length T, L = n_layer, d = d_model, a = d_attn, f = d_ff, H = n_head, V = n_vocab, s bytes per
activation (4 in fp32, 2 under bf16/fp16 autocast):

    parameters   4 P                       fp32 weights (autocast keeps the weights in fp32)
    gradients    4 P
    optimizer    12 P                      AdamW's two fp32 moments (8 P) and the temporaries of
                                           its multi-tensor update (4 P)
    workspace    150 MB                    what the first step adds to the process besides tensors
                                           (allocator arenas, autograd and BLAS workspaces)
    activations  B T [s (L A_layer + 4 d) + 20 V]
      A_layer = 8 d + 4 a + 3 f + A_att    what the forward keeps for the backward and the backward's
                                           transients: LayerNorm inputs and outputs, the inputs of
                                           the four projections, Q, K, V, the pre- and post-GELU
                                           activations, the residual stream and their gradients
      A_att   = 4 H T                      the torch reference's dense scores, probabilities and their
                                           gradients (B x H x T x T each); 2 H for the fused kernels
                                           (sdpa, triton), which keep only log-sum-exp rows
      20 V                                 the logits (and their fp32 copy under autocast),
                                           cross-entropy's log-probabilities and the two gradients
                                           (5 fp32 values per vocabulary entry)

The coefficients were set against the peak resident memory of real CPU steps (AdamW, torch and
sdpa backends, n_layer 2-8, d_model 64-512, n_ctx 64-256, n_vocab 256-50257, batch 1-1024): the
estimate was 1.2x to 1.4x of the measured peak (1.7x for a model of a few MB), an upper bound
with little waste. A step is accepted when the estimate is at most HEADROOM (85 %) of the free
memory. It is no bound for other models or optimizers.

Free memory: torch.cuda.mem_get_info on a GPU; on the CPU psutil's available memory when psutil is
installed, else MemAvailable from /proc/meminfo; None (no check) where neither exists, and on the
meta device, which allocates nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .config import GPTConfig
from .flops import param_counts

HEADROOM = 0.85
FP32_BYTES = 4
OPTIMIZER_BYTES_PER_PARAM = 12   # AdamW: two fp32 moments + the multi-tensor update's temporaries
WORKSPACE_BYTES = 150 * 10 ** 6  # allocator arenas, autograd and BLAS workspaces of a first step
GB = 1e9
DENSE_ATTENTION_BACKENDS = ("torch",)   # backends that materialise the B x H x T x T scores


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs, by part (see the module docstring for the formula)."""
    batch: int
    seq_len: int
    parameters: int
    gradients: int
    optimizer: int
    workspace: int
    activations: int
    per_sequence: int      # activation bytes of one sequence: activations = batch x per_sequence

    @property
    def fixed(self) -> int:
        """Bytes that do not grow with the batch."""
        return self.parameters + self.gradients + self.optimizer + self.workspace

    @property
    def total(self) -> int:
        return self.fixed + self.activations

    def largest_batch(self, free_bytes: int, headroom: float = HEADROOM) -> int:
        """The largest batch whose estimate is within headroom x free_bytes (0: not even one)."""
        room = headroom * free_bytes - self.fixed
        return max(0, int(room // self.per_sequence)) if room > 0 else 0

    def describe(self) -> str:
        opt = f", optimizer state {fmt_bytes(self.optimizer)}" if self.optimizer else ""
        return (f"{fmt_bytes(self.total)} (parameters {fmt_bytes(self.parameters)}, gradients "
                f"{fmt_bytes(self.gradients)}{opt}, workspace {fmt_bytes(self.workspace)}, "
                f"activations {fmt_bytes(self.activations)} at batch {self.batch} x {self.seq_len})")

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def fmt_bytes(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:.3g} TB"
    if n >= GB:
        return f"{n / GB:.3g} GB"
    return f"{n / 1e6:.3g} MB"


def training_memory(cfg: GPTConfig, batch: int, seq_len: int | None = None, *,
                    activation_bytes: int = FP32_BYTES, optimizer: bool = True,
                    backend: str | None = None) -> MemoryEstimate:
    """The memory estimate of one training step of `cfg` at `batch` x `seq_len` (default n_ctx)."""
    T = cfg.n_ctx if seq_len is None else seq_len
    if batch < 1 or T < 1:
        raise ValueError(f"batch and seq_len must be positive, got {batch} and {T}")
    backend = backend or cfg.backend
    P = param_counts(cfg).total
    L, d, a, f, H, V = cfg.n_layer, cfg.d_model, cfg.d_attn, cfg.d_ff, cfg.n_head, cfg.n_vocab
    att = 4 * H * T if backend in DENSE_ATTENTION_BACKENDS else 2 * H
    per_token = (L * (8 * d + 4 * a + 3 * f + att) + 4 * d) * activation_bytes + 5 * V * FP32_BYTES
    per_seq = T * per_token
    return MemoryEstimate(batch=batch, seq_len=T, parameters=FP32_BYTES * P, gradients=FP32_BYTES * P,
                          optimizer=(OPTIMIZER_BYTES_PER_PARAM * P) if optimizer else 0,
                          workspace=WORKSPACE_BYTES, activations=batch * per_seq,
                          per_sequence=per_seq)


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_memory(device) -> int | None:
    """Free bytes on `device` (a str or torch.device), or None when it cannot be known (and on the
    meta device, which needs none)."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        return _meminfo_available()
    return int(psutil.virtual_memory().available)


class InsufficientMemory(ValueError):
    """A training step would not fit the device's free memory (raised before allocating)."""

    def __init__(self, message: str, estimate: MemoryEstimate, free: int, largest_batch: int):
        super().__init__(message)
        self.estimate, self.free, self.largest_batch = estimate, free, largest_batch


def check_training_memory(cfg: GPTConfig, batch: int, seq_len: int | None, device, *,
                          activation_bytes: int = FP32_BYTES, backend: str | None = None,
                          optimizer: bool = True, what: str | None = None,
                          free: int | None = None) -> MemoryEstimate:
    """The estimate of one training step; InsufficientMemory (a ValueError) naming the estimate,
    the free memory and the largest batch that fits when it exceeds HEADROOM of the free memory.
    optimizer=False: a forward and backward only (the counters), no AdamW state.
    `free` overrides the device's free memory (tests); no check when it cannot be known."""
    est = training_memory(cfg, batch, seq_len, activation_bytes=activation_bytes, backend=backend,
                          optimizer=optimizer)
    free = free_memory(device) if free is None else free
    if free is None or est.total <= HEADROOM * free:
        return est
    fit = est.largest_batch(free)
    name = what or f"model {cfg.name} (n_layer {cfg.n_layer}, d_model {cfg.d_model})"
    advice = (f"the largest batch that fits is {fit}" if fit >= 1 else
              f"the model does not fit even at batch 1 ({fmt_bytes(est.fixed)} for its parameters, "
              f"gradients{' and AdamW state' if optimizer else ''} alone): use a smaller model")
    raise InsufficientMemory(
        f"{'training' if optimizer else 'a training step of'} {name} needs about {est.describe()}, "
        f"and the {_device_word(device)} has "
        f"{fmt_bytes(free)} free (sixn uses at most {HEADROOM:.0%} of it); {advice}",
        est, free, fit)


def _device_word(device) -> str:
    s = str(device)
    return "CPU" if s == "cpu" else f"GPU {s}" if s.startswith("cuda") else s


def bytes_per_activation(dtype: str | None) -> int:
    """Bytes of one activation for a TrainConfig / bench dtype name (autocast halves them)."""
    return 2 if dtype in ("bfloat16", "float16", "bf16", "fp16") else FP32_BYTES


__all__ = ["HEADROOM", "InsufficientMemory", "MemoryEstimate", "bytes_per_activation",
           "check_training_memory", "fmt_bytes", "free_memory", "training_memory"]
