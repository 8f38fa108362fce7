"""One training run: AdamW, linear warm-up then cosine decay, checkpoints, resume and a NaN guard.

Every `eval_interval` steps (and at the last step) the run evaluates the validation loss (and the
transfer loss, when a second corpus is given) on fixed windows, appends one row to
<run>/log.csv and then saves <run>/ckpt.pt (model, optimizer, RNG states, step, noise-scale EMA),
each write atomic (temporary file + os.replace). A run that is killed restarts from its last
checkpoint and drops the log rows written after it, so it loses at most one evaluation interval;
with the same seed the resumed run continues exactly as an uninterrupted one would (the batch
sampler's generator is part of the checkpoint).

Each row carries the compute spent so far under every convention: C = tokens x
model.flops.flops_per_token(cfg, convention, seq_len) for kaplan_6N, kaplan_6N_context and
full_model, and C_measured = steps x the FLOPs of one training step counted by
bench.counters.count_step(..., counter="dispatch") for this shape (matmul FLOPs executed in forward
and backward; empty when that backend cannot be counted), with PF-days for each. Evaluation and the
optimizer are not counted, as in Kaplan et al.

Gradient noise: every `noise_interval` steps the step's batch is run as `noise_microbatches`
micro-batches whose gradients give B_simple (scaling.noise) at no extra FLOPs.

A non-finite loss stops the run with TrainingDiverged: the log and the last good checkpoint stay,
and <run>/diverged.json says where and why. So does a run whose final validation loss is worse
than a uniform guess over the vocabulary (ln n_vocab): it learnt nothing usable and is not done.

Resume reads the run's files back checked (scaling.runstate): a torn last log line (a kill during
an append) is dropped with a notice; any other damage is a CorruptFile naming the file, and
train(repair=True) sets the run's files aside and trains it again from step 0.

Data parallelism (World): under torch.distributed (torchrun) the run's global batch is split over
the ranks and DDP averages the gradients; the rows, compute columns (counted once per step for the
whole world) and B_simple (small batches = the ranks' micro-batches, big batch = the global one)
are those of the single-process run, and rank 0 writes every file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sixn.bench.counters import CounterError, count_step
from sixn.bench.errors import CorruptFile
from sixn.bench.results import (append_csv, atomic_path, clean_stale_temps, provenance, read_csv_rows,
                              write_csv_rows, write_json)
from sixn.kernels.runtime import DTYPES, SUPPORTED_DTYPES, dtype_name
from sixn.model.config import GPTConfig, dataclass_from_dict
from sixn.model.flops import param_counts, flops_per_token, pf_days
from sixn.model.gpt import GPT
from sixn.model.memory import bytes_per_activation, check_training_memory

from . import runstate
from .data import Corpus
from .noise import NoiseScale, flat_grad, set_flat_grad

# The conventions logged as compute columns (model.flops), plus "measured" from the counter.
LOG_CONVENTIONS = ("kaplan_6N", "kaplan_6N_head", "kaplan_6N_context", "full_model")
COMPUTE_KEYS = LOG_CONVENTIONS + ("measured",)

TRAIN_DTYPES = tuple(dtype_name(d) for d in SUPPORTED_DTYPES)  # autocast dtype on CUDA

# Column order of log.csv and curves.csv (the provenance columns follow, added by the writer).
LOG_COLUMNS = (
    "run", "kind", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "n_vocab", "N", "N_total",
    "batch_size", "batch_tokens", "data_tokens", "step", "tokens", "lr", "train_loss", "val_loss",
    "transfer_loss", "b_simple", "elapsed_s",
    *(f"C_{k}" for k in COMPUTE_KEYS), *(f"pf_days_{k}" for k in COMPUTE_KEYS),
)



class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run's log and last checkpoint are kept."""

    def __init__(self, message: str, step: int, loss: float, run_dir: Path | None = None):
        super().__init__(message)
        self.step, self.loss, self.run_dir = step, loss, run_dir


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000                # optimizer steps planned (the schedule's length)
    batch_size: int = 32             # sequences per step
    seq_len: int = 128               # tokens per sequence (<= the model's n_ctx)
    lr: float = 1e-3                 # peak learning rate
    warmup: int = 100                # linear warm-up steps
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio at `steps`
    weight_decay: float = 0.1        # AdamW, on matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0           # global gradient-norm clip (0 disables)
    eval_interval: int = 100         # steps between evaluations (and checkpoints)
    eval_batches: int = 8            # validation batches per evaluation (fixed windows)
    eval_batch_size: int = 0         # 0: batch_size
    noise_microbatches: int = 4      # k micro-batches for B_simple (0 or 1 disables)
    noise_interval: int = 0          # steps between noise measurements (0: eval_interval // 5)
    noise_ema: float = 0.9           # EMA decay of |G|^2 and tr(Sigma)
    data_tokens: int = 0             # train only on the first data_tokens of the split (0: all)
    max_tokens: int = 0              # stop after this many training tokens (0: no cap)
    early_stop: int = 0              # stop after this many evaluations without a new best (0: off)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"           # "bfloat16": autocast on CUDA (weights stay fp32)
    backend: str = "torch"           # model backend (model.config.BACKENDS)

    def __post_init__(self) -> None:
        pos = ("steps", "batch_size", "seq_len", "eval_interval", "eval_batches")
        for f in pos:
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"TrainConfig.{f} must be a positive int, got {v!r}")
        for f in ("warmup", "eval_batch_size", "noise_microbatches", "noise_interval", "data_tokens",
                  "max_tokens", "early_stop", "seed"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrainConfig.{f} must be an int >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.noise_microbatches > 1 and self.batch_size % self.noise_microbatches:
            raise ValueError(f"TrainConfig.batch_size ({self.batch_size}) must be divisible by "
                             f"noise_microbatches ({self.noise_microbatches}); or set it to 0")
        if self.dtype not in TRAIN_DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {list(TRAIN_DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.noise_ema < 1:
            raise ValueError(f"TrainConfig.noise_ema must be in [0, 1), got {self.noise_ema}")

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        """Steps the run makes: `steps`, cut by `max_tokens` when that is set."""
        if self.max_tokens:
            return max(1, min(self.steps, math.ceil(self.max_tokens / self.batch_tokens)))
        return self.steps

    @property
    def noise_every(self) -> int:
        return self.noise_interval or max(1, self.eval_interval // 5)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update `step` (0-based): linear warm-up to lr over `warmup` steps, then a
    cosine from lr down to lr * min_lr_ratio at cfg.steps (held there after)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    lo = cfg.lr * cfg.min_lr_ratio
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    return lo + 0.5 * (cfg.lr - lo) * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# Measured FLOPs per step
# --------------------------------------------------------------------------------------------

_STEP_FLOPS: dict[tuple, tuple[int | None, str]] = {}


def measure_step_flops(cfg: GPTConfig, batch: int, seq_len: int) -> tuple[int | None, str]:
    """Executed matmul FLOPs of one training step of this shape, counted by bench.counters'
    dispatch counter, and how; (None, why) when this backend cannot be counted. Never analytic.
    Counted once per shape in a process (the first count also imports torch._dynamo, which
    FlopCounterMode's dispatch needs, about a second); processes forked afterwards inherit the
    counts."""
    key = (cfg, batch, seq_len)
    if key not in _STEP_FLOPS:
        _STEP_FLOPS[key] = _count_step_flops(cfg, batch, seq_len)
    return _STEP_FLOPS[key]


def _count_step_flops(cfg: GPTConfig, batch: int, seq_len: int) -> tuple[int | None, str]:
    backend = cfg.backend
    if backend == "sdpa":
        return None, ("not measured: the dispatch counter does not count sdpa's fused attention "
                      "(run the torch or triton backend to get C_measured)")
    try:
        sc = count_step(cfg, batch, seq_len, counter="dispatch", backend=backend)
    except (CounterError, ValueError) as e:
        return None, f"not measured: {e}"
    return int(sc.total), f"bench.counters.count_step dispatch ({backend}, {sc.device}, {sc.dtype})"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def append_row(path: Path, row: dict, prov: dict) -> None:
    """Append one row (LOG_COLUMNS first, then its other keys, then the provenance columns)."""
    append_csv(path, [{**{k: row.get(k) for k in LOG_COLUMNS},
                       **{k: v for k, v in row.items() if k not in LOG_COLUMNS}}], prov)


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file beside `path`, then os.replace: never a torn checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, total_steps: int | None = None) -> dict:
    """The checkpoint, loaded with weights_only=True and checked (scaling.runstate)."""
    return runstate.load_checkpoint(path, total_steps)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

@dataclass
class RunResult:
    run_dir: Path
    status: str          # "done", "early_stopped"
    rows: list[dict]     # log rows as written (strings from the CSV)
    summary: dict        # what done.json holds


def _row_static(name: str, kind: str, cfg: GPTConfig, tcfg: TrainConfig) -> dict:
    pc = param_counts(cfg)
    return {"run": name, "kind": kind, "n_layer": cfg.n_layer, "d_model": cfg.d_model,
            "n_head": cfg.n_head, "d_ff": cfg.d_ff, "n_ctx": cfg.n_ctx, "n_vocab": cfg.n_vocab,
            "N": pc.nonembedding, "N_total": pc.total, "batch_size": tcfg.batch_size,
            "batch_tokens": tcfg.batch_tokens, "data_tokens": tcfg.data_tokens or None}


def compute_columns(cfg: GPTConfig, seq_len: int, steps: int, batch_tokens: int,
                    measured_step_flops: int | None) -> dict:
    """C_<convention> and pf_days_<convention> after `steps` steps of `batch_tokens` tokens."""
    tokens = steps * batch_tokens
    out = {}
    for conv in LOG_CONVENTIONS:
        out[f"C_{conv}"] = float(flops_per_token(cfg, conv, seq_len)) * tokens
    out["C_measured"] = None if measured_step_flops is None else float(measured_step_flops) * steps
    for k in COMPUTE_KEYS:
        c = out[f"C_{k}"]
        out[f"pf_days_{k}"] = None if c is None else pf_days(c)
    return out


def _opt_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(tcfg: TrainConfig):
    dev = torch.device(tcfg.device).type
    if tcfg.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev, dtype=DTYPES[tcfg.dtype])


@torch.no_grad()
def evaluate(model, corpus: Corpus, split: str, tcfg: TrainConfig, seed: int,
             world: "World | None" = None) -> float:
    """Mean loss over eval_batches fixed windows (the same windows at every evaluation). With
    several processes, rank r evaluates windows r, r + size, ... and the sums are added up."""
    world = world or World()
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    bs = tcfg.eval_batch_size or tcfg.batch_size
    total = 0.0
    for i in range(tcfg.eval_batches):
        x, y = corpus.get_batch(split, bs, tcfg.seq_len, gen, tcfg.device)
        if i % world.size != world.rank:
            continue
        with _autocast(tcfg):
            _, loss = model(x, y)
        total += float(loss)
    model.train(was_training)
    return world.sum_float(total) / tcfg.eval_batches


def _check_compatible(run_dir: Path, meta: dict) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    old = runstate.read_config(path)
    diffs = [k for k in ("model", "train", "corpus_fingerprint", "transfer_fingerprint", "kind")
             if old.get(k) != meta.get(k)]
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different {', '.join(diffs)}; it cannot be "
                         f"resumed with this configuration: use another output folder or delete it")


@dataclass(frozen=True)
class World:
    """The data-parallel group one run trains in: this process is rank `rank` of `size`.

    size 1 is a plain single-process run. With size > 1 (torch.distributed initialised, e.g. under
    torchrun) every rank draws the same global batch of `batch_size` sequences from the same
    generator and trains on its own contiguous shard of it; gradients are averaged by DDP, so the
    update equals the single-process one up to floating-point summation order. Rank 0 alone
    writes the run's files."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> "World":
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: int) -> slice:
        per = batch // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks (the tensor itself for one process)."""
        if self.size == 1:
            return t
        import torch.distributed as dist
        t = t.clone()
        dist.all_reduce(t)
        return t

    def sum_float(self, x: float) -> float:
        if self.size == 1:
            return x
        return float(self.sum(torch.tensor([x], dtype=torch.float64, device=_comm_device())))

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist
            dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors live: the current GPU with NCCL, the CPU with gloo."""
    import torch.distributed as dist
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def train(cfg: GPTConfig, tcfg: TrainConfig, corpus: Corpus, run_dir: str | Path, *,
          transfer: Corpus | None = None, name: str | None = None, kind: str = "ladder",
          measured_step_flops: int | None | str = "auto",
          callback: Callable[[int, torch.nn.Module, torch.optim.Optimizer], None] | None = None,
          progress: Callable[[str, int, int, dict | None], None] | None = None,
          extra_meta: dict | None = None, world: World | None = None,
          repair: bool = False) -> RunResult:
    """Train (or resume) one run in `run_dir`; returns when it is done.

    The steps, each a method of _Run: check the arguments, write config.json (with the measured
    FLOPs of one step, counted once), build the model and optimizer, resume from the checkpoint,
    then per step: schedule, batch, forward/backward (as micro-batches on noise steps), NaN guard,
    clip, update; per evaluation interval: evaluate, log a row, checkpoint, early stop; finally
    done.json. world: the data-parallel group (default: torch.distributed's when it is
    initialised, else one process).

    The run's files are read back checked (scaling.runstate): a damaged config.json, checkpoint
    or log is a CorruptFile naming the file; with repair=True the run's files are set aside in
    <run>/corrupt-<time>/ instead and the run trains again from step 0.

    callback(step, model, optimizer) runs after every optimizer step (tests use it to interrupt
    a run); progress(name, step, total_steps, row) after every step, row set at evaluations."""
    world = world or World.current()

    def start() -> _Run:
        run = _Run(cfg, tcfg, corpus, Path(run_dir), transfer=transfer, name=name, kind=kind,
                   world=world)
        run.write_config(measured_step_flops, extra_meta)
        run.build()
        run.resume()
        return run

    try:
        run = start()
    except CorruptFile as e:
        if not repair:
            raise
        world.barrier()  # every rank has read the files before rank 0 moves them
        if world.is_main:
            runstate.set_aside(run_dir, str(e))
        world.barrier()
        run = start()
    return run.loop(callback, progress)


def _notice(message: str) -> None:
    runstate.notice(message)


def _quiet(message: str) -> None:
    return None


class _Run:
    """One run while it trains: its configuration, model, optimizer, sampler and counters."""

    def __init__(self, cfg: GPTConfig, tcfg: TrainConfig, corpus: Corpus, run_dir: Path, *,
                 transfer: Corpus | None, name: str | None, kind: str, world: World):
        if cfg.backend != tcfg.backend:
            cfg = cfg.replace(backend=tcfg.backend)
        self.cfg, self.tcfg, self.corpus, self.transfer = cfg, tcfg, corpus, transfer
        self.run_dir, self.name, self.kind, self.world = run_dir, name or run_dir.name, kind, world
        self.data = self._check_inputs()
        self.log_path, self.ckpt_path = run_dir / "log.csv", run_dir / "ckpt.pt"
        self.cfg_path = run_dir / "config.json"
        self.meta = {"run": self.name, "kind": kind, "model": cfg.to_dict(), "train": tcfg.to_dict(),
                     "corpus_fingerprint": corpus.fingerprint,
                     "transfer_fingerprint": transfer.fingerprint if transfer is not None else None}
        self.prov = provenance(tcfg.device)
        self.device = torch.device(tcfg.device)
        self.measured: int | None = None
        # what the checkpoint holds besides the model, optimizer and RNG states
        self.step, self.elapsed, self.best, self.bad_evals = 0, 0.0, math.inf, 0
        self.step_saved = 0
        self.last_val = math.nan   # the last validation loss (the uniform-guess check)
        self.rows: list[dict] = []
        self.train_losses: list[torch.Tensor] = []

    # -- setup ---------------------------------------------------------------------------------

    def _check_inputs(self) -> Corpus:
        """The training data (cut to data_tokens) after checking the run's shapes fit."""
        cfg, tcfg, corpus, W = self.cfg, self.tcfg, self.corpus, self.world.size
        if tcfg.seq_len > cfg.n_ctx:
            raise ValueError(f"seq_len {tcfg.seq_len} exceeds the model's n_ctx {cfg.n_ctx}")
        if cfg.n_vocab < corpus.vocab_size:
            raise ValueError(f"model n_vocab {cfg.n_vocab} is smaller than the corpus vocabulary "
                             f"{corpus.vocab_size}")
        if tcfg.batch_size % W:
            raise ValueError(f"batch_size {tcfg.batch_size} must be divisible by the {W} "
                             f"data-parallel processes")
        k = self.local_microbatches
        if k > 1 and (tcfg.batch_size // W) % k:
            raise ValueError(f"each process's batch of {tcfg.batch_size // W} must split into "
                             f"{k} noise micro-batches; change batch_size or noise_microbatches")
        if not tcfg.data_tokens:
            return corpus
        if tcfg.data_tokens < tcfg.seq_len + 1 or tcfg.data_tokens > len(corpus.train):
            raise ValueError(f"data_tokens {tcfg.data_tokens} must be in [seq_len + 1, "
                             f"{len(corpus.train)}] (the training split's size)")
        return dataclasses.replace(corpus, train=corpus.train[:tcfg.data_tokens])

    @property
    def local_microbatches(self) -> int:
        """Noise micro-batches per process: the k of the config shared over the ranks (0: off)."""
        k = self.tcfg.noise_microbatches
        if k <= 1:
            return 0
        return max(1, k // self.world.size)

    def write_config(self, measured_step_flops: int | None | str, extra_meta: dict | None) -> None:
        """config.json, written once; the measured FLOPs of one step are counted once and kept
        there for resumes (rank 0 only: the other ranks write nothing)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _check_compatible(self.run_dir, self.meta)
        if not self.world.is_main:
            return
        clean_stale_temps(self.run_dir)
        old = runstate.read_config(self.cfg_path) if self.cfg_path.exists() else {}
        if measured_step_flops == "auto":
            if "measured_step_flops" in old:
                measured_step_flops, how = old["measured_step_flops"], old.get("measured_how", "")
            else:
                measured_step_flops, how = measure_step_flops(self.cfg, self.tcfg.batch_size,
                                                              self.tcfg.seq_len)
        else:
            how = "given by the caller" if measured_step_flops is not None else "not measured"
        self.measured = measured_step_flops
        if old:
            return
        cfg, tcfg, tr = self.cfg, self.tcfg, self.transfer
        write_json(self.cfg_path, {**self.meta, "corpus": self.corpus.info(),
                                   "transfer": tr.info() if tr is not None else None,
                                   "params": param_counts(cfg).to_dict(),
                                   "flops_per_token": {c: flops_per_token(cfg, c, tcfg.seq_len)
                                                       for c in LOG_CONVENTIONS},
                                   "measured_step_flops": measured_step_flops, "measured_how": how,
                                   **(extra_meta or {})}, self.prov)

    def build(self) -> None:
        """Model (seeded), AdamW, the batch sampler's generator and the noise-scale EMA; with
        more than one process the model is wrapped in DistributedDataParallel (after resume)."""
        tcfg = self.tcfg
        check_training_memory(self.cfg, tcfg.batch_size // self.world.size, tcfg.seq_len, self.device,
                              activation_bytes=bytes_per_activation(tcfg.dtype), what=f"run {self.name}")
        torch.manual_seed(tcfg.seed)
        self.model = GPT(self.cfg).to(self.device)
        self.opt = torch.optim.AdamW(_opt_groups(self.model, tcfg.weight_decay), lr=tcfg.lr,
                                     betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps,
                                     fused=self.device.type == "cuda")
        self.gen = torch.Generator().manual_seed(tcfg.seed + 1)
        self.noise = NoiseScale(tcfg.noise_ema)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.net: torch.nn.Module = self.model

    def resume(self) -> None:
        """Load the checkpoint (every rank), cut the log back to its step (rank 0), then wrap the
        model for data parallelism: DDP's constructor is the first collective, so no rank can
        write a new checkpoint before every rank has read this one."""
        tcfg, path = self.tcfg, self.ckpt_path
        torn = runstate.has_torn_tail(self.log_path)
        fieldnames, rows = runstate.read_log(self.log_path,
                                             say=_notice if self.world.is_main else _quiet)
        if path.exists():
            ck = load_checkpoint(path, tcfg.total_steps)
            runstate.restore(path, "model", lambda: self.model.load_state_dict(ck["model"]))
            runstate.restore(path, "optimizer state", lambda: self.opt.load_state_dict(ck["optim"]))
            runstate.restore(path, "sampler state", lambda: self.gen.set_state(ck["gen_state"]))
            runstate.restore(path, "RNG state", lambda: torch.set_rng_state(ck["torch_rng"]))
            if self.device.type == "cuda" and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ck["cuda_rng"], self.device)
            runstate.restore(path, "noise state", lambda: self.noise.load_state_dict(ck["noise"]))
            self.step, self.elapsed = ck["step"], ck["elapsed_s"]
            self.best, self.bad_evals = ck["best_val"], ck["bad_evals"]
            self.last_val = ck.get("last_val", math.nan)
        # the log must hold every evaluation up to the checkpoint; rows after it are dropped
        runstate.check_log_steps(self.log_path, rows, tcfg.eval_interval, tcfg.total_steps,
                                 self.step, f"the checkpoint ({path.name})")
        kept = [r for r in rows if int(r["step"]) <= self.step]
        if (torn or len(kept) != len(rows)) and self.world.is_main:
            if fieldnames:   # a torn line dropped: the next append starts on a line of its own
                write_csv_rows(self.log_path, fieldnames, kept)
            else:
                self.log_path.unlink()
        self.rows = kept
        self.step_saved = self.step
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = ([torch.cuda.current_device() if self.device.index is None else self.device.index]
                   if self.device.type == "cuda" else None)
            self.net = DDP(self.model, device_ids=ids)

    # -- one step ------------------------------------------------------------------------------

    def train_step(self) -> tuple[float, float]:
        """One optimizer step: (learning rate, loss of the global batch). Raises
        TrainingDiverged, before the update, when the loss is not finite."""
        tcfg, W = self.tcfg, self.world
        lr = lr_at(self.step, tcfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        # every rank draws the whole global batch (the sampler stays in step) and keeps its shard
        x, y = self.data.get_batch("train", tcfg.batch_size, tcfg.seq_len, self.gen, self.device)
        if W.size > 1:
            x, y = x[W.shard(tcfg.batch_size)], y[W.shard(tcfg.batch_size)]
        if self.local_microbatches and (self.step + 1) % tcfg.noise_every == 0:
            loss = self.noise_backward(x, y)
        else:
            with _autocast(tcfg):
                _, loss = self.net(x, y)
            loss.backward()
            loss = loss.detach()
            if W.size > 1:
                loss = W.sum(loss) / W.size
        self.nan_guard(float(loss), self.step + 1, lr)  # one host sync per step
        self.train_losses.append(loss)
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, tcfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        return lr, float(loss)

    def noise_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step's gradient as the mean of micro-batch gradients, and B_simple from them.

        Each rank runs its shard as local_microbatches micro-batches without DDP's all-reduce;
        the sum of their gradients and of their squared norms are then summed over the ranks: the
        mean of the m = size x local squared norms is |G_small|^2 at B_small = batch / m, the
        squared norm of the mean gradient is |G_big|^2 at the global batch (in tokens both)."""
        tcfg, W, k = self.tcfg, self.world, self.local_microbatches
        micro = x.shape[0] // k
        acc, sq, loss_sum = None, [], torch.zeros((), device=x.device)
        sync_off = self.net.no_sync() if W.size > 1 else contextlib.nullcontext()
        with sync_off:
            for i in range(k):
                for p in self.params:
                    p.grad = None
                with _autocast(tcfg):
                    _, loss_i = self.net(x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro])
                loss_i.backward()
                g = flat_grad(self.params)
                sq.append(g.dot(g))
                acc = g if acc is None else acc + g
                loss_sum = loss_sum + loss_i.detach()
        m = k * W.size
        acc, sq_sum = W.sum(acc), W.sum(torch.stack(sq).sum())
        loss = W.sum(loss_sum) / m
        mean = acc / m
        small, big = float(sq_sum) / m, float(mean.dot(mean))
        set_flat_grad(self.params, mean)
        if math.isfinite(small) and math.isfinite(big):
            self.noise.update(small, big, micro * tcfg.seq_len, tcfg.batch_size * tcfg.seq_len)
        return loss

    def nan_guard(self, value: float, at_step: int, lr: float) -> None:
        """Stop with TrainingDiverged on a non-finite loss; rank 0 writes diverged.json. The log
        and the last good checkpoint are kept."""
        if math.isfinite(value):
            return
        last = int(self.rows[-1]["step"]) if self.rows else 0
        msg = (f"run {self.name}: training diverged at step {at_step}: the loss is {value} "
               f"(lr {lr:.3g}). Stopped; the log up to step {last} and the checkpoint of step "
               f"{self.step_saved} are kept in {self.run_dir}. Lower the learning rate or raise "
               f"the warm-up.")
        if self.world.is_main:
            write_json(self.run_dir / "diverged.json", {"run": self.name, "step": at_step,
                                                        "loss": str(value), "lr": lr,
                                                        "reason": "non_finite_loss",
                                                        "message": msg}, self.prov)
        raise TrainingDiverged(msg, at_step, value, self.run_dir)

    # -- one evaluation interval ---------------------------------------------------------------

    def evaluate_row(self, lr: float, t0: float) -> dict:
        """Validation (and transfer) loss at this step and the log row that records it."""
        tcfg, seed = self.tcfg, eval_seed(self.tcfg)
        val = evaluate(self.model, self.data, "val", tcfg, seed, self.world)
        self.nan_guard(val, self.step, lr)
        self.last_val = val
        tr = None if self.transfer is None else evaluate(self.model, self.transfer, "val", tcfg,
                                                         seed, self.world)
        self.elapsed = time.perf_counter() - t0
        losses = self.train_losses
        row = {**_row_static(self.name, self.kind, self.cfg, tcfg), "step": self.step,
               "tokens": self.step * tcfg.batch_tokens, "lr": lr,
               "train_loss": float(torch.stack(losses).mean()) if losses else None,
               "val_loss": val, "transfer_loss": tr, "b_simple": self.noise.b_simple,
               "elapsed_s": round(self.elapsed, 3),
               **compute_columns(self.cfg, tcfg.seq_len, self.step, tcfg.batch_tokens, self.measured)}
        self.train_losses = []
        if val < self.best:
            self.best, self.bad_evals = val, 0
        else:
            self.bad_evals += 1
        return row

    def log(self, row: dict) -> None:
        """Append the row to log.csv (rank 0) and keep the log's rows."""
        if self.world.is_main:
            append_row(self.log_path, row, self.prov)
            self.rows = read_csv_rows(self.log_path)[1]

    def checkpoint(self) -> None:
        """ckpt.pt after the row it matches (rank 0): a kill in between drops that row on resume."""
        if self.world.is_main:
            dev = self.device
            save_checkpoint(self.ckpt_path, {
                "model": self.model.state_dict(), "optim": self.opt.state_dict(), "step": self.step,
                "gen_state": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "noise": self.noise.state_dict(), "elapsed_s": self.elapsed, "best_val": self.best,
                "bad_evals": self.bad_evals, "last_val": self.last_val})
        self.step_saved = self.step

    def stop_early(self) -> bool:
        """early_stop evaluations in a row without a new best validation loss."""
        return bool(self.tcfg.early_stop) and self.bad_evals >= self.tcfg.early_stop

    # -- the loop ------------------------------------------------------------------------------

    def loop(self, callback, progress) -> RunResult:
        total_steps, status = self.tcfg.total_steps, "done"
        if self.stop_early():
            status = "early_stopped"  # it had stopped before the kill that left done.json unwritten
            total_steps = self.step
        self.model.train()
        t0 = time.perf_counter() - self.elapsed
        while self.step < total_steps:
            lr, _ = self.train_step()
            if callback is not None:
                callback(self.step, self.model, self.opt)
            row = None
            if self.step % self.tcfg.eval_interval == 0 or self.step == total_steps:
                row = self.evaluate_row(lr, t0)
                self.log(row)
                self.checkpoint()
                if self.stop_early() and self.step < total_steps:
                    status = "early_stopped"
                    break
            if progress is not None and self.world.is_main:
                progress(self.name, self.step, total_steps, row)
        return self.finish(status)

    def uniform_guard(self) -> None:
        """A run that ends worse than a uniform guess over the vocabulary (loss ln n_vocab) learnt
        nothing usable: it is recorded as diverged (diverged.json, TrainingDiverged), not done."""
        uniform = math.log(self.cfg.n_vocab)
        if not self.last_val > uniform:  # NaN (an old checkpoint without it) passes
            return
        msg = (f"run {self.name}: the final validation loss {self.last_val:.4g} at step {self.step} "
               f"is worse than a uniform guess over the {self.cfg.n_vocab} tokens (ln "
               f"{self.cfg.n_vocab} = {uniform:.4g}): the run learnt nothing usable and is left out "
               f"of the fits. Lower the learning rate or raise the warm-up.")
        if self.world.is_main:
            write_json(self.run_dir / "diverged.json", {
                "run": self.name, "step": self.step, "loss": self.last_val, "lr": lr_at(
                    max(0, self.step - 1), self.tcfg), "reason": "worse_than_uniform",
                "uniform_loss": uniform, "message": msg}, self.prov)
        raise TrainingDiverged(msg, self.step, self.last_val, self.run_dir)

    def finish(self, status: str) -> RunResult:
        """done.json from the log's rows (rank 0); every rank returns once it is written. A run
        that ends worse than the uniform guess is diverged instead (uniform_guard)."""
        self.uniform_guard()
        summary: dict = {}
        if self.world.is_main:
            summary = summarize(self.rows, status=status, corpus_fingerprint=self.corpus.fingerprint)
            write_json(self.run_dir / "done.json", summary, self.prov)
        self.world.barrier()
        return RunResult(self.run_dir, status, self.rows, summary)


def eval_seed(tcfg: TrainConfig) -> int:
    """Seed of the evaluation windows (the same windows at every evaluation of a run)."""
    return tcfg.seed + 7919


def _finite(v) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def summarize(rows: list[dict], status: str = "done", corpus_fingerprint: str | None = None) -> dict:
    """One run's summary.csv row from its log rows (final and best loss, totals, B_simple)."""
    if not rows:
        raise ValueError("a run summary needs at least one evaluation row")
    last = rows[-1]
    vals = [_finite(r["val_loss"]) for r in rows]
    late = [b for b in (_finite(r.get("b_simple")) for r in rows[len(rows) // 2:]) if b is not None]
    out = {k: last.get(k) for k in ("run", "kind", "N", "N_total", "n_layer", "d_model", "n_head",
                                     "n_ctx", "n_vocab", "batch_size", "data_tokens")}
    out.update({
        "D": last["tokens"], "steps": last["step"], "val_loss": last["val_loss"],
        "best_val_loss": min(v for v in vals if v is not None) if any(v is not None for v in vals) else None,
        "transfer_loss": last.get("transfer_loss"),
        **{f"C_{k}": last.get(f"C_{k}") for k in COMPUTE_KEYS},
        **{f"pf_days_{k}": last.get(f"pf_days_{k}") for k in COMPUTE_KEYS},
        "b_simple": statistics.median(late) if late else None,
        "corpus_fingerprint": corpus_fingerprint, "status": status,
        "elapsed_s": last.get("elapsed_s"),
    })
    return out
