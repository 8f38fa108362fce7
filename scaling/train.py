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
and <run>/diverged.json says where and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sixn.bench.results import (PROVENANCE_FIELDS, atomic_path, provenance,
                              read_csv_rows, write_csv_rows, write_json)
from sixn.model.config import GPTConfig, dataclass_from_dict
from sixn.model.flops import param_counts, flops_per_token, pf_days

from .data import Corpus
from .noise import NoiseScale, flat_grad, set_flat_grad

# The conventions logged as compute columns (model.flops), plus "measured" from the counter.
LOG_CONVENTIONS = ("kaplan_6N", "kaplan_6N_context", "full_model")
COMPUTE_KEYS = LOG_CONVENTIONS + ("measured",)

# Column order of log.csv and curves.csv (the provenance columns follow, added by the writer).
LOG_COLUMNS = (
    "run", "kind", "n_layer", "d_model", "n_head", "d_ff", "n_ctx", "n_vocab", "N", "N_total",
    "batch_size", "batch_tokens", "data_tokens", "step", "tokens", "lr", "train_loss", "val_loss",
    "transfer_loss", "b_simple", "elapsed_s",
    *(f"C_{k}" for k in COMPUTE_KEYS), *(f"pf_days_{k}" for k in COMPUTE_KEYS),
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
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

def measure_step_flops(cfg: GPTConfig, batch: int, seq_len: int) -> tuple[int | None, str]:
    """Executed matmul FLOPs of one training step of this shape, counted by bench.counters'
    dispatch counter, and how; (None, why) when this backend cannot be counted. Never analytic."""
    backend = cfg.backend
    if backend == "sdpa":
        return None, ("not measured: the dispatch counter does not count sdpa's fused attention "
                      "(run the torch or triton backend to get C_measured)")
    try:
        from sixn.bench.counters import CounterError, count_step
    except ImportError:
        return _flop_counter_step(cfg, batch, seq_len)
    try:
        sc = count_step(cfg, batch, seq_len, counter="dispatch", backend=backend)
    except (CounterError, ValueError) as e:
        return None, f"not measured: {e}"
    return int(sc.total), f"bench.counters.count_step dispatch ({backend}, {sc.device}, {sc.dtype})"


def _flop_counter_step(cfg: GPTConfig, batch: int, seq_len: int) -> tuple[int | None, str]:
    """Fallback when bench.counters is unavailable: FlopCounterMode over one real step on the CPU."""
    from torch.utils.flop_counter import FlopCounterMode
    from sixn.model.gpt import GPT
    if cfg.backend != "torch":
        return None, "not measured: bench.counters is unavailable and only the torch backend " \
                     "can be counted without it"
    model = GPT(cfg)
    idx = torch.randint(0, cfg.n_vocab, (batch, seq_len))
    with FlopCounterMode(display=False) as fc:
        _, loss = model(idx, idx)
        loss.backward()
    return int(fc.get_total_flops()), "FlopCounterMode over one CPU training step (torch backend)"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def append_row(path: Path, row: dict, prov: dict) -> None:
    """Append one row (with provenance columns) to a CSV, atomically (the file is rewritten)."""
    fieldnames, rows = read_csv_rows(path)
    full = {**{k: row.get(k) for k in LOG_COLUMNS}, **{k: v for k, v in row.items() if k not in LOG_COLUMNS},
            **{k: prov[k] for k in PROVENANCE_FIELDS}}
    for k in full:
        if k not in fieldnames:
            fieldnames.append(k)
    write_csv_rows(path, fieldnames, rows + [full])


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file beside `path`, then os.replace: never a torn checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


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
def evaluate(model, corpus: Corpus, split: str, tcfg: TrainConfig, seed: int) -> float:
    """Mean loss over eval_batches fixed windows (the same windows at every evaluation)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    bs = tcfg.eval_batch_size or tcfg.batch_size
    total = 0.0
    for _ in range(tcfg.eval_batches):
        x, y = corpus.get_batch(split, bs, tcfg.seq_len, gen, tcfg.device)
        with _autocast(tcfg):
            _, loss = model(x, y)
        total += float(loss)
    model.train(was_training)
    return total / tcfg.eval_batches


def _check_compatible(run_dir: Path, meta: dict) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diffs = [k for k in ("model", "train", "corpus_fingerprint", "transfer_fingerprint", "kind")
             if old.get(k) != meta.get(k)]
    if diffs:
        raise ValueError(f"{run_dir} holds a run with a different {', '.join(diffs)}; it cannot be "
                         f"resumed with this configuration: use another output folder or delete it")


def train(cfg: GPTConfig, tcfg: TrainConfig, corpus: Corpus, run_dir: str | Path, *,
          transfer: Corpus | None = None, name: str | None = None, kind: str = "ladder",
          measured_step_flops: int | None | str = "auto",
          callback: Callable[[int, torch.nn.Module, torch.optim.Optimizer], None] | None = None,
          progress: Callable[[str, int, int, dict | None], None] | None = None,
          extra_meta: dict | None = None) -> RunResult:
    """Train (or resume) one run in `run_dir`; returns when it is done.

    callback(step, model, optimizer) runs after every optimizer step (tests use it to interrupt
    a run); progress(name, step, total_steps, row) after every step, row set at evaluations."""
    from sixn.model.gpt import GPT
    run_dir = Path(run_dir)
    name = name or run_dir.name
    if cfg.backend != tcfg.backend:
        cfg = cfg.replace(backend=tcfg.backend)
    if tcfg.seq_len > cfg.n_ctx:
        raise ValueError(f"seq_len {tcfg.seq_len} exceeds the model's n_ctx {cfg.n_ctx}")
    if cfg.n_vocab < corpus.vocab_size:
        raise ValueError(f"model n_vocab {cfg.n_vocab} is smaller than the corpus vocabulary "
                         f"{corpus.vocab_size}")
    data = corpus
    if tcfg.data_tokens:
        if tcfg.data_tokens < tcfg.seq_len + 1 or tcfg.data_tokens > len(corpus.train):
            raise ValueError(f"data_tokens {tcfg.data_tokens} must be in [seq_len + 1, "
                             f"{len(corpus.train)}] (the training split's size)")
        data = dataclasses.replace(corpus, train=corpus.train[:tcfg.data_tokens])

    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path, cfg_path = run_dir / "log.csv", run_dir / "ckpt.pt", run_dir / "config.json"
    meta = {"run": name, "kind": kind, "model": cfg.to_dict(), "train": tcfg.to_dict(),
            "corpus_fingerprint": corpus.fingerprint,
            "transfer_fingerprint": transfer.fingerprint if transfer is not None else None}
    _check_compatible(run_dir, meta)
    prov = provenance(tcfg.device)

    # Measured FLOPs per step: counted once, kept in config.json for resumes.
    old_meta = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    if measured_step_flops == "auto":
        if "measured_step_flops" in old_meta:
            measured_step_flops, how = old_meta["measured_step_flops"], old_meta.get("measured_how", "")
        else:
            measured_step_flops, how = measure_step_flops(cfg, tcfg.batch_size, tcfg.seq_len)
    else:
        how = "given by the caller" if measured_step_flops is not None else "not measured"
    if not cfg_path.exists():
        write_json(cfg_path, {**meta, "corpus": corpus.info(),
                              "transfer": transfer.info() if transfer is not None else None,
                              "params": param_counts(cfg).to_dict(),
                              "flops_per_token": {c: flops_per_token(cfg, c, tcfg.seq_len)
                                                  for c in LOG_CONVENTIONS},
                              "measured_step_flops": measured_step_flops, "measured_how": how,
                              **(extra_meta or {})}, prov)

    device = torch.device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(_opt_groups(model, tcfg.weight_decay), lr=tcfg.lr,
                            betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps,
                            fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(tcfg.seed + 1)
    noise = NoiseScale(tcfg.noise_ema)
    step, elapsed, best, bad_evals = 0, 0.0, math.inf, 0

    # Resume: the checkpoint's state, and the log cut back to its step.
    fieldnames, rows = read_csv_rows(log_path)
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optim"])
        gen.set_state(ck["gen_state"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        noise.load_state_dict(ck["noise"])
        step, elapsed, best, bad_evals = ck["step"], ck["elapsed_s"], ck["best_val"], ck["bad_evals"]
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) != len(rows):
        write_csv_rows(log_path, fieldnames, kept)
    rows = kept

    total_steps = tcfg.total_steps
    static = _row_static(name, kind, cfg, tcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    k = tcfg.noise_microbatches
    micro = tcfg.batch_size // k if k > 1 else 0
    eval_seed = tcfg.seed + 7919
    train_losses: list[torch.Tensor] = []
    status = "done"
    model.train()
    t0 = time.perf_counter() - elapsed

    def diverged(at_step: int, value: float, lr: float):
        last = int(rows[-1]["step"]) if rows else 0
        msg = (f"run {name}: training diverged at step {at_step}: the loss is {value} (lr {lr:.3g}). "
               f"Stopped; the log up to step {last} and the checkpoint of step {step_saved} are "
               f"kept in {run_dir}. Lower the learning rate or raise the warm-up.")
        write_json(run_dir / "diverged.json", {"run": name, "step": at_step, "loss": str(value),
                                               "lr": lr, "message": msg}, prov)
        return TrainingDiverged(msg, at_step, value, run_dir)

    step_saved = step
    if tcfg.early_stop and bad_evals >= tcfg.early_stop:
        status = "early_stopped"  # it had stopped before the kill that left done.json unwritten
        total_steps = step
    while step < total_steps:
        lr = lr_at(step, tcfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = data.get_batch("train", tcfg.batch_size, tcfg.seq_len, gen, device)
        if micro and (step + 1) % tcfg.noise_every == 0:
            acc, sq = None, []
            loss_sum = 0.0
            for i in range(k):
                for p in params:
                    p.grad = None
                with _autocast(tcfg):
                    _, loss_i = model(x[i * micro:(i + 1) * micro], y[i * micro:(i + 1) * micro])
                loss_i.backward()
                g = flat_grad(params)
                sq.append(g.dot(g))
                acc = g if acc is None else acc + g
                loss_sum = loss_sum + loss_i.detach()
            mean = acc / k
            small = float(torch.stack(sq).mean())
            big = float(mean.dot(mean))
            set_flat_grad(params, mean)
            loss = loss_sum / k
            if math.isfinite(small) and math.isfinite(big):
                noise.update(small, big, micro * tcfg.seq_len, tcfg.batch_size * tcfg.seq_len)
        else:
            with _autocast(tcfg):
                _, loss = model(x, y)
            loss.backward()
        loss = loss.detach()
        lv = float(loss)  # one host sync per step: the NaN guard acts before the update
        if not math.isfinite(lv):
            raise diverged(step + 1, lv, lr)
        train_losses.append(loss)
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if callback is not None:
            callback(step, model, opt)
        row = None
        if step % tcfg.eval_interval == 0 or step == total_steps:
            val = evaluate(model, data, "val", tcfg, eval_seed)
            if not math.isfinite(val):
                raise diverged(step, val, lr)
            tr = None if transfer is None else evaluate(model, transfer, "val", tcfg, eval_seed)
            elapsed = time.perf_counter() - t0
            row = {**static, "step": step, "tokens": step * tcfg.batch_tokens, "lr": lr,
                   "train_loss": float(torch.stack(train_losses).mean()) if train_losses else None,
                   "val_loss": val, "transfer_loss": tr, "b_simple": noise.b_simple,
                   "elapsed_s": round(elapsed, 3),
                   **compute_columns(cfg, tcfg.seq_len, step, tcfg.batch_tokens, measured_step_flops)}
            train_losses = []
            if val < best:
                best, bad_evals = val, 0
            else:
                bad_evals += 1
            append_row(log_path, row, prov)
            fieldnames, rows = read_csv_rows(log_path)
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                "gen_state": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "noise": noise.state_dict(), "elapsed_s": elapsed, "best_val": best,
                "bad_evals": bad_evals})
            step_saved = step
            if tcfg.early_stop and bad_evals >= tcfg.early_stop and step < total_steps:
                status = "early_stopped"
                break
        if progress is not None:
            progress(name, step, total_steps, row)

    summary = summarize(rows, status=status, corpus_fingerprint=corpus.fingerprint)
    write_json(run_dir / "done.json", summary, prov)
    return RunResult(run_dir, status, rows, summary)


def _num(v) -> float | None:
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def summarize(rows: list[dict], status: str = "done", corpus_fingerprint: str | None = None) -> dict:
    """One run's summary.csv row from its log rows (final and best loss, totals, B_simple)."""
    if not rows:
        raise ValueError("a run summary needs at least one evaluation row")
    last = rows[-1]
    vals = [_num(r["val_loss"]) for r in rows]
    late = [b for b in (_num(r.get("b_simple")) for r in rows[len(rows) // 2:]) if b is not None]
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
    # Values read back from the CSV are strings: make numbers numbers again.
    for key, v in list(out.items()):
        if isinstance(v, str) and key not in ("run", "kind", "corpus_fingerprint", "status"):
            out[key] = _num(v) if v != "" else None
            if out[key] is not None and out[key] == int(out[key]) and key in (
                    "N", "N_total", "n_layer", "d_model", "n_head", "n_ctx", "n_vocab", "batch_size",
                    "data_tokens", "D", "steps"):
                out[key] = int(out[key])
    return out
