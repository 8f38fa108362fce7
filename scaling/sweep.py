"""Resumable sweeps: a ladder of model sizes (plus data-limited and shape runs) in one folder, which
is the single source of truth for any number of workers.

Layout of a sweep folder (default results/scaling/<device-slug>/, "-quick" appended for --quick):

    sweep.json                  the plan, corpus, device and every run fully resolved
    sweep.lock                  held by the command that drives the sweep (scaling.claims)
    tables.lock                 held while curves.csv / summary.csv are rewritten
    slurm.json                  each run's last Slurm job (when submitted there)
    runs/<run>/config.json      GPTConfig, TrainConfig, corpus fingerprint, provenance
    runs/<run>/log.csv          one row per evaluation (scaling.train.LOG_COLUMNS + provenance)
    runs/<run>/ckpt.pt          last checkpoint (git-ignored)
    runs/<run>/done.json        the run's summary once finished (diverged.json if it diverged,
                                failed.json with the error if it crashed)
    runs/<run>/claim.lock       held by the worker that trains the run
    runs/<run>/attempts.jsonl   one line per start or resume: who, where, from which step
    curves.csv                  every evaluation row of every run of the plan
    summary.csv                 one row per finished run
    experiments.json            shape / sample-efficiency / transfer analysis (scaling.experiments)
    launch.json                 how the last command ran it (workers, devices) and its wall clock
                                (an IsoFLOP command's extension rounds and final fits added up)

One run is one unit of work (work): a worker claims it (a flock the kernel drops when the worker
dies), trains or resumes it from its checkpoint, then merges the tables under tables.lock. So two
workers never train one run, a killed worker's run is taken over from its last checkpoint, and
rerunning skips runs that have done.json (or diverged.json). A run's folder name holds its kind,
shape and a hash of its model and training configuration and of the corpus (and transfer corpus)
fingerprints, so a changed plan or corpus never reuses a run made with other settings.
curves.csv and summary.csv are rewritten atomically after every run. How the workers are started
(this process, local processes, torchrun, Slurm) is scaling.launch's business.

CPU ladder (the default without a GPU): byte-level vocabulary 256, n_ctx 64, batches of 32 x 64
tokens, eight sizes from N = 6.1e3 to 7.9e5 (2.1 decades; n_layer 2-4, d_model 16-128), 700 to
2400 steps (growing as N^0.25) at a learning rate that falls as N^-0.15, one torch thread per
run and two runs at once on two cores (scaling.launch). Measured on this project's 2-core VM
(results/scaling/cpu/): 1,413 s of training summed over the runs, the largest alone 599 s, and
12.5 minutes of wall clock with 2 workers (launch.json wall_s 749.7); launch.json records what a
sweep really took on another machine.
GPU ladder: eight model.presets ladder sizes from 2.5e4 to 8.5e7 (3.5 decades), n_ctx 256, bf16
autocast, the triton backend when sixn's kernels import (else sdpa), about ten minutes on an H100.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from sixn.bench.errors import CorruptFile
from sixn.bench.results import (clean_stale_temps, device_slug, provenance, read_json, read_rows,
                               results_root, write_csv, write_csv_rows, write_json)
from sixn.model.config import GPTConfig
from sixn.model.flops import flops_per_token, param_counts
from sixn.model.presets import PRESETS

from . import runstate
from .claims import (CLAIM_FILE, SWEEP_LOCK, TABLES_LOCK, Claim, claim, describe, holder,
                     try_claim, whoami)
from .isoflop import (CPU_BUDGETS, CPU_SIZES, GPU_BUDGETS, GPU_SIZES, QUICK_BUDGETS, QUICK_SIZES,
                      IsoflopDesign, default_budgets, schedule_for_budget, window)
from .train import LOG_COLUMNS, TrainConfig, TrainingDiverged, train

KINDS = ("ladder", "data", "shape", "isoflop")
CONVENTION_TAGS = {"kaplan_6N": "6N", "kaplan_6N_head": "6Nhead", "kaplan_6N_context": "6Nctx",
                   "full_model": "full", "measured": "meas"}
PRESET_SETS = ("cpu", "gpu")


@dataclass(frozen=True)
class RunSpec:
    kind: str
    model: GPTConfig
    train: TrainConfig
    label: str = ""   # a short tag for tables (e.g. "aspect 32")
    data_id: str = ""  # corpus (and transfer corpus) fingerprints: part of the name's hash
    budget: float = 0.0  # isoflop runs: the FLOPs the schedule ends at, under budget_convention
    budget_convention: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"run kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def name(self) -> str:
        m, t = self.model, self.train
        base = f"{self.kind}-L{m.n_layer}-d{m.d_model}-h{m.n_head}"
        if self.budget:
            tag = f"{CONVENTION_TAGS.get(self.budget_convention, self.budget_convention)}-" \
                  f"C{self.budget:.2e}".replace("e+", "e")
            base = f"{self.kind}-{tag}{base[len(self.kind):]}"
        if t.data_tokens:
            base += f"-D{t.data_tokens}"
        blob = {"model": {k: v for k, v in m.to_dict().items() if k != "name"},
                "train": {k: v for k, v in t.to_dict().items() if k != "device"},
                "data": self.data_id}
        if self.budget:
            blob["budget"] = [self.budget, self.budget_convention]
        blob = json.dumps(blob, sort_keys=True)
        return f"{base}-{hashlib.sha256(blob.encode()).hexdigest()[:6]}"

    @property
    def cost(self) -> float:
        """Training FLOPs of the run (full-model count): weights the progress bar and orders the
        work (costliest first)."""
        return flops_per_token(self.model, "full_model", self.train.seq_len) * \
            self.train.total_steps * self.train.batch_tokens

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "data_id": self.data_id,
                **({"budget": self.budget, "budget_convention": self.budget_convention}
                   if self.budget else {}),
                "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """The run a to_dict() describes; its name must come out the same (else the entry was
        edited or written by another version of sixn)."""
        r = cls(d["kind"], GPTConfig.from_dict(d["model"]), TrainConfig.from_dict(d["train"]),
                d.get("label", ""), d.get("data_id", ""), d.get("budget", 0.0),
                d.get("budget_convention", ""))
        if "name" in d and r.name != d["name"]:
            raise ValueError(f"run {d['name']}: its configuration gives the name {r.name}; the "
                             f"sweep's plan was written by another version of sixn or edited")
        return r


@dataclass
class SweepPlan:
    runs: list[RunSpec]
    name: str = "cpu"
    corpus: list[str] | None = None          # None: the standard library default
    bpe_vocab: int | None = None             # None: bytes
    transfer: bool = False
    transfer_corpus: list[str] | None = None  # None: the default transfer corpus
    max_bytes: int | None = None             # read at most this much text (deterministic subset)
    quick: bool = False
    isoflop: IsoflopDesign | None = None     # the budgets of an IsoFLOP sweep
    size_grid: list[GPTConfig] | None = None  # its grid of shapes, ascending in N
    size_train: list[TrainConfig] | None = None  # the training setup of each (steps unset)

    def to_dict(self) -> dict:
        return {"name": self.name, "corpus": self.corpus, "bpe_vocab": self.bpe_vocab,
                "transfer": self.transfer, "transfer_corpus": self.transfer_corpus,
                "max_bytes": self.max_bytes, "quick": self.quick,
                "isoflop": self.isoflop.to_dict() if self.isoflop is not None else None,
                "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict) -> "SweepPlan":
        """The plan's runs and corpora (what a worker needs; an IsoFLOP design's size grid is not
        kept)."""
        runs = [RunSpec.from_dict(r) for r in d["runs"]]
        return cls(runs, **{k: d[k] for k in ("name", "corpus", "bpe_vocab", "transfer",
                                              "transfer_corpus", "max_bytes", "quick") if k in d})


# --------------------------------------------------------------------------------------------
# Ladders
# --------------------------------------------------------------------------------------------

# (n_layer, d_model) of the CPU ladder: N = 12 L d^2 = 6.1e3 ... 7.9e5, heads of width 16 (8 at d 24).
CPU_LADDER = ((2, 16), (2, 24), (2, 32), (2, 48), (3, 64), (4, 80), (4, 96), (4, 128))
QUICK_LADDER = ((2, 16), (2, 24), (2, 32), (2, 48), (3, 64))
# model.presets names of the GPU ladder (2.5e4 ... 8.5e7 non-embedding parameters).
GPU_LADDER = ("ladder-25k", "ladder-98k", "ladder-197k", "ladder-786k", "ladder-3m", "ladder-14m",
              "ladder-25m", "ladder-85m")

# Shape experiment at N ~ 1e5 (Kaplan Fig. 5): aspect ratio d_model / n_layer from 96 to 4, then
# the head count at (2, 64). (n_layer, d_model, n_head)
CPU_SHAPES = ((1, 96, 6), (2, 64, 4), (4, 48, 3), (8, 32, 2), (2, 64, 1), (2, 64, 8))
GPU_SHAPES = ((2, 640, 10), (4, 448, 7), (6, 384, 6), (8, 320, 5), (12, 256, 4), (24, 192, 3),
              (6, 384, 2), (6, 384, 12))   # N ~ 1e7
CPU_SHAPE_STEPS = 1000


def cpu_lr(N: int) -> float:
    """Peak learning rate of the CPU ladder: 4e-3 at N = 1e5, larger for smaller models."""
    return round(4e-3 * (N / 1e5) ** -0.15, 6)


def cpu_steps(N: int) -> int:
    """Steps of a CPU ladder run: 1000 at N = 24576, growing as N^0.25 (larger models need more
    tokens to come near convergence; the budget stays dominated by the largest)."""
    return int(50 * round(20 * (N / 24576) ** 0.25))


def gpu_lr(N: int) -> float:
    """Kaplan et al.'s fit LR(N) ~ 0.003239 - 0.0001395 log N (their eq. D.1), floored at 3e-4."""
    return round(max(3e-4, 0.003239 - 0.0001395 * math.log(N)), 6)


def parse_size(s: str) -> tuple[int, int, int | None]:
    """'ladder-98k' (a model.presets name) or 'LxD' / 'LxDxH' (n_layer x d_model [x n_head])."""
    if s in PRESETS:
        c = PRESETS[s]
        return c.n_layer, c.d_model, c.n_head
    m = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", s)
    if not m:
        raise ValueError(f"unknown size {s!r}: give a model.presets name ({', '.join(PRESETS)}) or "
                         f"n_layer x d_model like 2x64 (optionally x n_head, e.g. 2x64x4)")
    L, d = int(m.group(1)), int(m.group(2))
    H = int(m.group(3)) if m.group(3) else None
    if L <= 0 or d <= 0 or (H is not None and (H <= 0 or d % H)):
        raise ValueError(f"bad size {s!r}: n_layer and d_model must be positive and d_model "
                         f"divisible by n_head")
    return L, d, H


def _model(L: int, d: int, H: int | None, n_ctx: int, backend: str) -> GPTConfig:
    if H is None:
        H = d // 16 if d % 16 == 0 else (d // 8 if d % 8 == 0 else 1)
    return GPTConfig.from_shape(L, d, n_ctx=n_ctx, n_vocab=256, n_head=H, backend=backend,
                                name=f"L{L}-d{d}")


def cpu_train(N: int, quick: bool, steps: int | None = None) -> TrainConfig:
    if quick:
        s = steps or 300
        return TrainConfig(steps=s, batch_size=16, seq_len=64, lr=cpu_lr(N), warmup=max(1, s // 10),
                           eval_interval=max(1, s // 6), eval_batches=4, noise_interval=max(1, s // 30))
    s = steps or cpu_steps(N)
    # the same warm-up for every size (as Kaplan's 3000 steps), so early learning curves compare
    return TrainConfig(steps=s, batch_size=32, seq_len=64, lr=cpu_lr(N), warmup=min(100, max(1, s // 10)),
                       eval_interval=max(1, s // 20), eval_batches=8)


def gpu_train(N: int, quick: bool, backend: str, steps: int | None = None) -> TrainConfig:
    s = steps or (200 if quick else 1500)
    return TrainConfig(steps=s, batch_size=64, seq_len=256, lr=gpu_lr(N), warmup=max(1, s // 10),
                       eval_interval=max(1, s // 15), eval_batches=10, device="cuda",
                       dtype="bfloat16", backend=backend)


def build_plan(preset_set: str = "cpu", *, quick: bool = False, sizes: list[str] | None = None,
               data_limited: bool = False, shape: bool = False, transfer: bool = False,
               corpus: list[str] | None = None, bpe_vocab: int | None = None,
               transfer_corpus: list[str] | None = None, steps: int | None = None,
               include_ladder: bool = True, isoflop: IsoflopDesign | None = None) -> SweepPlan:
    """The runs of a sweep: the ladder of sizes, and optionally data-limited and shape runs; with
    `isoflop`, an IsoFLOP sweep instead (see scaling.isoflop; `sizes` is then its size grid)."""
    if preset_set not in PRESET_SETS:
        raise ValueError(f"unknown preset set {preset_set!r}; supported: {', '.join(PRESET_SETS)}")
    gpu = preset_set == "gpu"
    backend = "triton" if gpu else "torch"
    n_ctx = 256 if gpu else 64
    if sizes:
        shapes = [parse_size(s) for s in sizes]
    elif gpu:
        shapes = [parse_size(s) for s in (GPU_LADDER[:4] if quick else GPU_LADDER)]
    else:
        shapes = [(L, d, None) for L, d in (QUICK_LADDER if quick else CPU_LADDER)]

    def tc(N: int) -> TrainConfig:
        return gpu_train(N, quick, backend, steps) if gpu else cpu_train(N, quick, steps)

    if isoflop is not None:
        grid = shapes if sizes else [
            parse_size(s) if isinstance(s, str) else (*s, None)
            for s in ((GPU_SIZES if gpu else QUICK_SIZES if quick else CPU_SIZES))]
        vocab = bpe_vocab or 256
        default = GPU_BUDGETS if gpu else QUICK_BUDGETS if quick else CPU_BUDGETS
        models = sorted((_model(L, d, H, n_ctx, backend).replace(n_vocab=vocab)
                         for L, d, H in grid), key=lambda m: param_counts(m).nonembedding)
        runs = isoflop_runs(isoflop, models, tc, default)
        return SweepPlan(runs, name=preset_set + "-isoflop" + ("-quick" if quick else ""),
                         corpus=corpus, bpe_vocab=bpe_vocab, transfer=transfer,
                         transfer_corpus=transfer_corpus, quick=quick, isoflop=isoflop,
                         size_grid=models, size_train=[
                             tc(param_counts(m).nonembedding).replace(noise_microbatches=0)
                             for m in models])

    runs: list[RunSpec] = []
    if include_ladder:
        for L, d, H in shapes:
            m = _model(L, d, H, n_ctx, backend)
            N = param_counts(m).nonembedding
            runs.append(RunSpec("ladder", m, tc(N), label=f"N={N:.3g}"))
    if data_limited:
        # L(D) and L(N, D): the second and third largest ladder sizes (quick: the second largest;
        # the largest would double the sweep's time) on nested data subsets, trained with early
        # stopping on the validation loss (Kaplan's protocol).
        by_n = sorted(shapes, key=lambda s: param_counts(_model(*s, n_ctx, backend)).nonembedding)
        picks = by_n[-2:-1] if quick or len(by_n) < 3 else by_n[-3:-1]
        picks = picks or by_n
        fracs = (1 / 64, 1 / 16, 1 / 4) if not quick else (1 / 16, 1 / 4)
        first = tc(param_counts(_model(*picks[0], n_ctx, backend)).nonembedding)
        full = first.total_steps * first.batch_tokens   # one grid of D for every size
        for L, d, H in picks:
            m = _model(L, d, H, n_ctx, backend)
            base = tc(param_counts(m).nonembedding)
            for fr in fracs:
                D = int(full * fr)
                runs.append(RunSpec("data", m, base.replace(data_tokens=D, early_stop=3),
                                    label=f"D={D:.3g}"))
    if shape:
        shapes_x = GPU_SHAPES if gpu else CPU_SHAPES
        if quick:
            shapes_x = shapes_x[:3]
        # one training setup for every shape: that of the shapes' common N
        n_fix = 100_000 if not gpu else 10_000_000
        t_fix = tc(n_fix) if gpu or quick or steps else cpu_train(n_fix, False, CPU_SHAPE_STEPS)
        for L, d, H in shapes_x:
            m = _model(L, d, H, n_ctx, backend)
            runs.append(RunSpec("shape", m, t_fix, label=f"aspect {d / L:.3g}, head {d // H}"))
    if not runs:
        raise ValueError("the plan has no runs: keep the ladder or add --data-limited / --shape")
    return SweepPlan(runs, name=preset_set + ("-quick" if quick else ""), corpus=corpus,
                     bpe_vocab=bpe_vocab, transfer=transfer, transfer_corpus=transfer_corpus,
                     quick=quick)


def isoflop_runs(design: IsoflopDesign, grid: list[GPTConfig], tc,
                 default: tuple[float, ...]) -> list[RunSpec]:
    """The runs of an IsoFLOP design over a grid of shapes: for each budget convention, a window
    of sizes per budget, each with a schedule that ends at its budget; tc(N) gives the training
    setup of a size, `default` the full-model budgets used when the design gives none."""
    grid = sorted(grid, key=lambda m: param_counts(m).nonembedding)
    probe = tc(param_counts(grid[0]).nonembedding)
    runs = []
    for conv in design.conventions:
        budgets = design.budgets or default_budgets(default, grid, probe, conv)
        for budget in sorted(budgets):
            for i in window(grid, probe, budget, conv, design.sizes_per_budget,
                            design.min_steps):
                m = grid[i]
                N = param_counts(m).nonembedding
                t = schedule_for_budget(m, tc(N).replace(noise_microbatches=0), budget, conv,
                                        min_steps=design.min_steps)
                runs.append(RunSpec("isoflop", m, t, label=f"{conv} C={budget:.3g}, N={N:.3g}",
                                    budget=budget, budget_convention=conv))
    return runs


def isoflop_extensions(plan: SweepPlan, sweep_dir: Path) -> list[RunSpec]:
    """Runs that bracket the budgets whose lowest final loss is at an edge of their sizes: the
    next size of the grid beyond that edge, at that budget (none past the grid's ends, none whose
    schedule would be shorter than the design's min_steps). Read from the sweep's
    summary.csv and sweep.json; rerunning with the returned runs added resumes the sweep."""
    if plan.isoflop is None or not plan.size_grid or not (sweep_dir / "summary.csv").exists():
        return []
    meta = read_sweep_json(sweep_dir / "sweep.json")
    where = {r["name"]: (r["budget"], r["budget_convention"]) for r in meta.get("runs", [])
             if r.get("budget")}
    shape = {(m.n_layer, m.d_model, m.n_head): i for i, m in enumerate(plan.size_grid)}
    trained: dict[tuple, dict[int, float]] = {}
    for row in read_rows(sweep_dir / "summary.csv"):
        key = where.get(row.get("run"))
        i = shape.get((row.get("n_layer"), row.get("d_model"), row.get("n_head")))
        if key is None or i is None or row.get("val_loss") is None:
            continue
        trained.setdefault(key, {})[i] = float(row["val_loss"])
    planned = {(r.budget, r.budget_convention, (r.model.n_layer, r.model.d_model, r.model.n_head))
               for r in plan.runs if r.budget}
    out = []
    for (budget, conv), losses in sorted(trained.items()):
        lo, hi = min(losses), max(losses)
        best = min(losses, key=losses.get)
        nxt = lo - 1 if best == lo else hi + 1 if best == hi else None
        if nxt is None or not 0 <= nxt < len(plan.size_grid):
            continue
        m = plan.size_grid[nxt]
        if (budget, conv, (m.n_layer, m.d_model, m.n_head)) in planned:
            continue
        N = param_counts(m).nonembedding
        try:
            t = schedule_for_budget(m, plan.size_train[nxt], budget, conv,
                                    min_steps=plan.isoflop.min_steps)
        except ValueError:
            continue
        out.append(RunSpec("isoflop", m, t, label=f"{conv} C={budget:.3g}, N={N:.3g} (extends "
                           f"the profile past its {'smallest' if nxt < lo else 'largest'} size)",
                           budget=budget, budget_convention=conv))
    return out


def default_plan(device: str | None = None, quick: bool = False, **kw) -> SweepPlan:
    dev = _device(device)
    return build_plan("gpu" if torch.device(dev).type == "cuda" else "cpu", quick=quick, **kw)


def _device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but no CUDA GPU is visible")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} not supported; supported: cpu, cuda")
    return str(dev)


def default_sweep_dir(device: str, quick: bool = False, isoflop: bool = False) -> Path:
    return results_root() / "scaling" / (device_slug(device) + ("-isoflop" if isoflop else "")
                                         + ("-quick" if quick else ""))


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------

class Progress:
    """The sweep's tqdm bar on stderr, weighted by each run's FLOPs (`costs`, by run name).

    update(run, step, steps, eval row or None) comes from train() for a run in this process, or
    from a launcher that follows its workers through the sweep folder (`poll`, which update()
    calls at most once a second): several runs may advance at once. A run skipped because it finished earlier counts as done at once. Off a terminal the
    bar refreshes every 30 s.
    """

    def __init__(self, costs: dict[str, float], enabled: bool = True, stream=None):
        self.costs = costs
        self.frac: dict[str, float] = {}
        self.n = len(costs)
        self.order = {name: i for i, name in enumerate(costs, 1)}
        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=sum(costs.values()) or 1.0, file=stream, disable=not enabled,
                        unit="FLOP", unit_scale=True, mininterval=0.5 if tty else 30.0,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} FLOP [{elapsed}<{remaining}]")
        self.poll: Callable[[], None] | None = None  # called from update() at most once a second
        self._polled = 0.0

    def _set(self, name: str, frac: float) -> None:
        self.frac[name] = frac
        done = sum(self.costs.get(n, 0.0) * f for n, f in self.frac.items())
        self.bar.update(max(0.0, done - self.bar.n))

    def skipped(self, name: str) -> None:
        self._set(name, 1.0)
        self.line(f"[{self.order.get(name, 0)}/{self.n}] {name}: finished earlier, skipped")

    def update(self, name: str, step: int, steps: int, row: dict | None) -> None:
        self.bar.set_description(f"{self.order.get(name, 0)}/{self.n} {name} step {step}/{steps}",
                                 refresh=False)
        if row is not None:
            self.bar.set_postfix(val=f"{float(row['val_loss']):.3f}", refresh=False)
        self._set(name, min(1.0, step / max(1, steps)))
        if self.poll is not None and time.monotonic() - self._polled > 1.0:
            self._polled = time.monotonic()
            self.poll()  # e.g. a launcher reading the other workers' progress from the folder

    def end_run(self, name: str) -> None:
        self._set(name, 1.0)

    def line(self, msg: str) -> None:
        if not self.bar.disable:
            self.bar.write(msg, file=self.bar.fp)

    def say(self, msg: str) -> None:
        """A line that is always shown (a divergence, a failure): above the bar, or on stderr
        when the bar is off."""
        if self.bar.disable:
            print(msg, file=sys.stderr, flush=True)
        else:
            self.bar.write(msg, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------------------------
# The sweep folder: one run = one unit of work
# --------------------------------------------------------------------------------------------

class SweepBusy(RuntimeError):
    """Another command drives this sweep folder now (it holds sweep.lock)."""


def load_plan_corpora(plan: SweepPlan):
    from .data import load_corpus, transfer_corpus
    tok = plan.bpe_vocab if plan.bpe_vocab else "byte"
    corpus = load_corpus(plan.corpus, tokenizer=tok, max_bytes=plan.max_bytes)
    tr = transfer_corpus(corpus, plan.transfer_corpus) if plan.transfer else None
    return corpus, tr


def data_identity(corpus, transfer=None) -> str:
    """What a run's data is: another corpus or transfer corpus makes other runs (other names)."""
    return corpus.fingerprint + (f"+{transfer.fingerprint}" if transfer is not None else "")


def resolve_plan(plan: SweepPlan, vocab_size: int, device: str, data_id: str = "") -> list[RunSpec]:
    """The plan's runs with the corpus's vocabulary, its fingerprints and this device filled in."""
    out = []
    for r in plan.runs:
        t = r.train.replace(device=device)
        if torch.device(device).type != "cuda" and t.dtype != "float32":
            t = t.replace(dtype="float32")
        if torch.device(device).type != "cuda" and t.backend == "triton":
            t = t.replace(backend="torch")
        m = r.model.replace(n_vocab=vocab_size, backend=t.backend)
        if r.budget:  # the schedule ends at the budget with this corpus's vocabulary
            t = schedule_for_budget(m, t, r.budget, r.budget_convention,
                                    min_steps=plan.isoflop.min_steps)
        out.append(RunSpec(r.kind, m, t, r.label, data_id, r.budget, r.budget_convention))
    return out


FINISHED = ("done.json", "diverged.json")


def run_finished(run_dir: Path) -> bool:
    """A run is finished once it has done.json (done or early-stopped) or diverged.json."""
    return any((run_dir / f).exists() for f in FINISHED)


@dataclass
class Sweep:
    """A sweep folder ready for work: its resolved runs and their corpora. `lock` is the sweep
    lock when this process drives the sweep (prepare_sweep), None in a worker (load_sweep)."""

    dir: Path
    runs: list[RunSpec]
    corpus: object
    transfer: object | None
    device: str
    prov: dict
    lock: Claim | None = None

    def run_dir(self, run: RunSpec | str) -> Path:
        return self.dir / "runs" / (run if isinstance(run, str) else run.name)

    def pending(self) -> list[RunSpec]:
        """Unfinished runs, the costliest first (so that parallel workers end together)."""
        return sorted((r for r in self.runs if not run_finished(self.run_dir(r))),
                      key=lambda r: -r.cost)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def prepare_sweep(plan: SweepPlan | str | None, out_dir: str | Path | None, device: str,
                  quick: bool = False, repair: bool = False) -> Sweep:
    """Take the sweep lock, load the corpora, resolve the plan and write sweep.json (the plan with
    every run fully resolved: what any worker, local or on a cluster node, reads to train one).
    Failure markers of earlier attempts are cleared, so that those runs are tried again. Every
    run's files are read back and checked (check_runs) before any worker starts.

    Raises SweepBusy when another command holds the sweep, CorruptFile when a run's files are
    damaged (repair=True: that run's files are set aside and it trains again from step 0)."""
    if plan is None:
        plan = default_plan(device, quick=quick)
    elif isinstance(plan, str):
        plan = build_plan(plan, quick=quick)
    sweep_dir = Path(out_dir) if out_dir is not None else default_sweep_dir(
        device, plan.quick or quick, plan.isoflop is not None)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = try_claim(sweep_dir / SWEEP_LOCK, "sweep")
    if lock is None:
        raise SweepBusy(f"{sweep_dir} is being run by {describe(holder(sweep_dir / SWEEP_LOCK))}; "
                        f"wait for it to end, or follow it with `sixn scale --status --out "
                        f"{sweep_dir}`")
    try:
        prov = provenance(device)
        corpus, tr = load_plan_corpora(plan)
        data_id = data_identity(corpus, tr)
        runs = resolve_plan(plan, corpus.vocab_size, device, data_id)
        write_json(sweep_dir / "sweep.json", {
            "plan": plan.to_dict(), "device": device, "corpus": corpus.info(),
            "transfer": tr.info() if tr is not None else None, "data_id": data_id,
            "runs": [r.to_dict() for r in runs]}, prov)
        for r in runs:
            (sweep_dir / "runs" / r.name / "failed.json").unlink(missing_ok=True)
        clean_stale_temps(sweep_dir)   # left by a command killed while it wrote a table
        check_runs(sweep_dir, runs, repair)
    except BaseException:
        lock.release()
        raise
    return Sweep(sweep_dir, runs, corpus, tr, device, prov, lock)


def check_runs(sweep_dir: Path, runs: list[RunSpec], repair: bool = False) -> None:
    """Read back and check the files of every run of the sweep that no worker holds now
    (scaling.runstate.check_run): CorruptFile for the first damaged one, or with repair=True its
    files set aside (runstate.set_aside) so that it trains again."""
    for r in runs:
        rd = sweep_dir / "runs" / r.name
        if not rd.exists() or holder(rd / CLAIM_FILE) is not None:
            continue
        try:
            runstate.check_run(rd, r.train.eval_interval, r.train.total_steps)
        except CorruptFile as e:
            if not repair:
                raise
            runstate.set_aside(rd, str(e))


def load_sweep(sweep_dir: str | Path, device: str | None = None) -> Sweep:
    """A prepared sweep as a worker sees it: sweep.json's runs, the corpora loaded again and
    checked to be the ones the plan was resolved with. device: where this worker trains (default
    the plan's)."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "sweep.json"
    if not path.exists():
        raise ValueError(f"{sweep_dir} holds no sweep.json: is it on a filesystem this machine "
                         f"shares with the one that prepared the sweep?")
    meta = read_sweep_json(path)
    plan = SweepPlan.from_dict(meta["plan"])
    corpus, tr = load_plan_corpora(plan)
    if data_identity(corpus, tr) != meta["data_id"]:
        raise ValueError(f"the corpus read here ({data_identity(corpus, tr)}) is not the one the "
                         f"sweep in {sweep_dir} was planned with ({meta['data_id']}): the files "
                         f"changed, or this machine sees other files")
    runs = [RunSpec.from_dict(r) for r in meta["runs"]]
    if device is not None:
        runs = [dataclasses.replace(r, train=r.train.replace(device=device)) for r in runs]
    return Sweep(sweep_dir, runs, corpus, tr, device or meta["device"], provenance(device or meta["device"]))


def train_run(sweep: Sweep, run: RunSpec, bar: Progress | None = None, world=None) -> str:
    """Train (or resume) one run of the sweep, whose claim the caller holds; return its state:
    done, diverged, or failed (any other error: recorded in the run's failed.json, which the next
    command clears to try again; the other runs go on)."""
    rd = sweep.run_dir(run)
    # a divergence or a failure is always said, with or without a progress bar
    say = bar.say if bar is not None else (lambda m: print(m, file=sys.stderr, flush=True))
    if world is None or world.is_main:
        record_attempt(rd, world)
    try:
        train(run.model, run.train, sweep.corpus, rd, transfer=sweep.transfer, name=run.name,
              kind=run.kind, progress=bar.update if bar is not None else None,
              extra_meta={"label": run.label}, world=world)
        return "done"
    except TrainingDiverged as e:
        say(f"sixn scale: {e}")
        return "diverged"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        if world is None or world.is_main:
            write_json(rd / "failed.json", {"run": run.name, "error": error,
                                            "input_error": isinstance(e, ValueError),
                                            "traceback": traceback.format_exc()[-4000:],
                                            "worker": whoami("train")}, sweep.prov)
        say(f"sixn scale: run {run.name} failed: {error} (details in {rd / 'failed.json'})")
        return "failed"
    finally:
        if bar is not None:
            bar.end_run(run.name)


ATTEMPTS = "attempts.jsonl"


def record_attempt(run_dir: Path, world=None) -> None:
    """One line per time a worker starts (or resumes) the run: who, where, and the last step its
    log held then (the resume itself goes back to the checkpoint, which is that step or the
    evaluation before it). Appended in whole lines, so the file tells how often and by whom a run
    was trained."""
    try:
        rows = runstate.read_log(run_dir / "log.csv", say=lambda m: None)[1]
        logged = int(rows[-1]["step"]) if rows else 0
    except CorruptFile:  # the trainer says what is wrong with it
        logged = None
    line = {**whoami("train"), "logged_step": logged,
            "processes": world.size if world is not None else 1}
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps(line) + "\n")


def attempts(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / ATTEMPTS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line torn by a kill
    return out


def work(sweep: Sweep, names: list[str] | None = None, bar: Progress | None = None,
         wait: bool = True, runner: Callable[[RunSpec], str] | None = None,
         deadline: float | None = None) -> list[str]:
    """A worker: train every unfinished run (of `names`, default all) that it can claim, the
    costliest first, merging the tables after each; return the names of the runs it trained.

    A run held by another worker is passed over; when only such runs are left the worker waits
    for one of their claims (wait=True): it comes free when that worker finishes the run, or
    when it dies, and then the run is resumed here from its checkpoint.
    runner(run) -> state trains a run in other processes (torchrun) that claim it themselves;
    "held" means they found it claimed. Without a runner this process claims and trains.
    deadline (time.time()): no run is started after it, nor one that would not end by it at the
    seconds per unit of cost of the last run this worker trained; the rest wait for a resume."""
    todo = [r for r in sweep.pending() if names is None or r.name in names]
    trained: list[str] = []
    rate = 0.0  # seconds per unit of run cost, of the last run this worker trained
    while todo:
        held = []
        for r in todo:
            if deadline is not None and time.time() > deadline:
                return trained
            if deadline is not None and time.time() + rate * r.cost > deadline:
                continue  # would not finish in time; a cheaper one later may
            t0 = time.time()
            rd = sweep.run_dir(r)
            if run_finished(rd) or (rd / "failed.json").exists():
                continue
            c = try_claim(rd / CLAIM_FILE, "train")
            if c is None:
                held.append(r)
                continue
            if runner is not None:
                c.release()  # the runner's own processes claim the run
                if runner(r) == "held":
                    held.append(r)
                    continue
            else:
                with c:
                    if run_finished(rd) or (rd / "failed.json").exists():
                        continue  # finished by another worker since we looked
                    train_run(sweep, r, bar)
                collect(sweep.dir, sweep.runs, sweep.prov)
                if r.cost > 0:
                    rate = (time.time() - t0) / r.cost
            trained.append(r.name)
        if not wait or not held:
            break
        with claim(sweep.run_dir(held[0]) / CLAIM_FILE, "wait"):
            pass
        todo = held
    return trained


def collect(sweep_dir: Path, runs: list[RunSpec], prov: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Rewrite curves.csv and summary.csv from the runs' logs (atomically, one writer at a time
    under tables.lock); return their rows."""
    with claim(Path(sweep_dir) / TABLES_LOCK, "tables"):
        curves: list[dict] = []
        fields: list[str] = list(LOG_COLUMNS)
        summary: list[dict] = []
        for r in runs:
            rd = sweep_dir / "runs" / r.name
            # checked reads; a torn last line of a log being appended to now is left out quietly
            fn, rows = runstate.read_log(rd / "log.csv", say=lambda m: None)
            for f in fn:
                if f not in fields:
                    fields.append(f)
            curves.extend(rows)
            done = rd / "done.json"
            if done.exists():
                s = runstate.read_done(done)
                s.pop("provenance", None)
                summary.append(s)
        if curves:
            write_csv_rows(sweep_dir / "curves.csv", fields, curves)
        if summary:
            write_csv(sweep_dir / "summary.csv", summary, prov)
    return curves, summary


def announce_finished(sweep: Sweep, bar: Progress) -> None:
    for r in sweep.runs:
        if run_finished(sweep.run_dir(r)):
            bar.skipped(r.name)


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------

STATES = ("done", "early_stopped", "diverged", "failed", "running", "queued", "partial", "new")


def run_status(sweep_dir: Path, name: str) -> dict:
    """One run's state from its folder: done / early_stopped (done.json), diverged, failed,
    running (its claim is held: by whom), partial (a checkpoint), new; with its last step."""
    rd = Path(sweep_dir) / "runs" / name
    out: dict = {"holder": None, "attempts": len(attempts(rd))}
    if (rd / "done.json").exists():
        s = runstate.read_done(rd / "done.json")
        out.update({k: s.get(k) for k in ("N", "D", "val_loss", "best_val_loss", "b_simple",
                                          "elapsed_s", "status")})
        out["state"] = s.get("status") or "done"
        return out
    if (rd / "diverged.json").exists():
        d = runstate.read_diverged(rd / "diverged.json")
        out.update(state="diverged", step=d["step"], reason=d.get("reason", "non_finite_loss"),
                   error=d["message"])
        return out
    h = holder(rd / CLAIM_FILE)
    if h is not None:
        out.update(state="running", holder=h)
    elif (rd / "failed.json").exists():
        f = read_json(rd / "failed.json", what="the run's failure record", remedy=_RERUN,
                      required={"error": str})
        out.update(state="failed", error=f.get("error"), input_error=bool(f.get("input_error")))
    else:
        out["state"] = "partial" if (rd / "ckpt.pt").exists() else "new"
    rows = runstate.read_log(rd / "log.csv", say=lambda m: None)[1]
    out["step"] = int(rows[-1]["step"]) if rows else 0
    return out


_RERUN = "rerun the sweep's command (it rewrites this file), or delete the file"


def read_sweep_json(path: Path) -> dict:
    """sweep.json checked: a JSON object with the plan and the list of runs."""
    meta = read_json(path, what="the sweep's plan", remedy=_RERUN,
                     required={"plan": dict, "runs": list})
    for i, r in enumerate(meta["runs"]):
        if not (isinstance(r, dict) and isinstance(r.get("name"), str)
                and isinstance(r.get("kind"), str)):
            raise CorruptFile(path, f"the sweep's plan: run {i} has no name or kind", _RERUN)
    return meta


def sweep_status(sweep_dir: Path) -> list[dict]:
    """Each run of the sweep's plan (from sweep.json) with its state (run_status), and the Slurm
    job that was last submitted for it, when there is one (slurm.json, written by scaling.launch)."""
    sweep_dir = Path(sweep_dir)
    meta = read_sweep_json(sweep_dir / "sweep.json")
    jobs_path = sweep_dir / "slurm.json"
    jobs = read_json(jobs_path, what="the sweep's Slurm job record", remedy=_RERUN).get(
        "runs", {}) if jobs_path.exists() else {}
    out = []
    for r in meta["runs"]:
        st = run_status(sweep_dir, r["name"])
        steps = r.get("train", {}).get("steps")
        out.append({"name": r["name"], "kind": r["kind"], "label": r.get("label", ""),
                    "steps": steps, **st, "slurm_job": jobs.get(r["name"], {}).get("job_id")})
    return out
