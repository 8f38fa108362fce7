"""Resumable sweeps: a ladder of model sizes (plus data-limited and shape runs) in one folder.

Layout of a sweep folder (default results/scaling/<device-slug>/, "-quick" appended for --quick):

    sweep.json                  the plan, corpus and device
    runs/<run>/config.json      GPTConfig, TrainConfig, corpus fingerprint, provenance
    runs/<run>/log.csv          one row per evaluation (scaling.train.LOG_COLUMNS + provenance)
    runs/<run>/ckpt.pt          last checkpoint (git-ignored)
    runs/<run>/done.json        the run's summary once finished (diverged.json if it diverged)
    curves.csv                  every evaluation row of every run of the plan
    summary.csv                 one row per finished run
    experiments.json            shape / sample-efficiency / transfer analysis (scaling.experiments)

Rerunning the same plan skips runs that have done.json (or diverged.json) and resumes an
interrupted one from its checkpoint. A run's folder name holds its kind, shape and a hash of its
model and training configuration and of the corpus (and transfer corpus) fingerprints, so a
changed plan or corpus never reuses a run made with other settings.
curves.csv and summary.csv are rewritten atomically after every run.

CPU ladder (the default without a GPU): byte-level vocabulary 256, n_ctx 64, batches of 32 x 64
tokens, five sizes from N = 6.1e3 to 3.1e5 (n_layer 2-4, d_model 16-80), 700 to 1900 steps
(growing as N^0.25) at a learning rate that falls as N^-0.15, on one torch thread; it finishes in
well under 15 minutes on two cores.
GPU ladder: eight model.presets ladder sizes from 2.5e4 to 8.5e7 (3.5 decades), n_ctx 256, bf16
autocast, the triton backend when sixn's kernels import (else sdpa), about ten minutes on an H100.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from sixn.bench.results import (device_slug, provenance, read_csv_rows, read_rows, results_root,
                               write_csv, write_csv_rows, write_json)
from sixn.model.config import GPTConfig
from sixn.model.flops import flops_per_token, param_counts
from sixn.model.presets import PRESETS
from sixn.scaling.plots import plot_sweep
from sixn.scaling.sweep_fits import fit_sweep

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
        """Training FLOPs of the run (full-model count): weights the progress bar."""
        return flops_per_token(self.model, "full_model", self.train.seq_len) * \
            self.train.total_steps * self.train.batch_tokens


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
                "runs": [{"name": r.name, "kind": r.kind, "label": r.label,
                          "model": r.model.to_dict(), "train": r.train.to_dict()} for r in self.runs]}


# --------------------------------------------------------------------------------------------
# Ladders
# --------------------------------------------------------------------------------------------

# (n_layer, d_model) of the CPU ladder: N = 12 L d^2 = 6.1e3 ... 3.1e5, heads of width 16.
CPU_LADDER = ((2, 16), (2, 32), (2, 48), (3, 64), (4, 80))
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
            parse_size(s, preset_set) if isinstance(s, str) else (*s, None)
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
            for i in window(grid, probe, budget, conv, design.sizes_per_budget):
                m = grid[i]
                N = param_counts(m).nonembedding
                t = schedule_for_budget(m, tc(N).replace(noise_microbatches=0), budget, conv)
                runs.append(RunSpec("isoflop", m, t, label=f"{conv} C={budget:.3g}, N={N:.3g}",
                                    budget=budget, budget_convention=conv))
    return runs


def isoflop_extensions(plan: SweepPlan, sweep_dir: Path) -> list[RunSpec]:
    """Runs that bracket the budgets whose lowest final loss is at an edge of their sizes: the
    next size of the grid beyond that edge, at that budget (none past the grid's ends, none whose
    schedule would be shorter than scaling.isoflop.MIN_STEPS). Read from the sweep's
    summary.csv and sweep.json; rerunning with the returned runs added resumes the sweep."""
    if plan.isoflop is None or not plan.size_grid or not (sweep_dir / "summary.csv").exists():
        return []
    meta = json.loads((sweep_dir / "sweep.json").read_text())
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
            t = schedule_for_budget(m, plan.size_train[nxt], budget, conv)
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

    train() reports (run, step, steps, eval row or None) to update(); a run skipped because it
    finished earlier counts as done at once. Off a terminal the bar refreshes every 30 s.
    """

    def __init__(self, costs: dict[str, float], enabled: bool = True, stream=None):
        self.costs = costs
        self.done_cost = 0.0
        self.n = len(costs)
        self.index = 0
        stream = stream or sys.stderr
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=sum(costs.values()) or 1.0, file=stream, disable=not enabled,
                        unit="FLOP", unit_scale=True, mininterval=0.5 if tty else 30.0,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} FLOP [{elapsed}<{remaining}]")

    def _advance(self, to: float) -> None:
        self.bar.update(max(0.0, to - self.bar.n))

    def start_run(self, name: str, index: int, skipped: bool = False) -> None:
        self.index = index
        if skipped:
            self.done_cost += self.costs.get(name, 0.0)
            self._advance(self.done_cost)
            self.line(f"[{index}/{self.n}] {name}: finished earlier, skipped")

    def update(self, name: str, step: int, steps: int, row: dict | None) -> None:
        self.bar.set_description(f"{self.index}/{self.n} {name} step {step}/{steps}", refresh=False)
        if row is not None:
            self.bar.set_postfix(val=f"{row['val_loss']:.3f}", refresh=False)
        self._advance(self.done_cost + self.costs.get(name, 0.0) * step / max(1, steps))

    def end_run(self, name: str) -> None:
        self.done_cost += self.costs.get(name, 0.0)
        self._advance(self.done_cost)

    def line(self, msg: str) -> None:
        if not self.bar.disable:
            self.bar.write(msg, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------

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
            t = schedule_for_budget(m, t, r.budget, r.budget_convention)
        out.append(RunSpec(r.kind, m, t, r.label, data_id, r.budget, r.budget_convention))
    return out


def collect(sweep_dir: Path, runs: list[RunSpec], prov: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Rewrite curves.csv and summary.csv from the runs' logs (atomically); return their rows."""
    curves: list[dict] = []
    fields: list[str] = list(LOG_COLUMNS)
    summary: list[dict] = []
    for r in runs:
        rd = sweep_dir / "runs" / r.name
        fn, rows = read_csv_rows(rd / "log.csv")
        for f in fn:
            if f not in fields:
                fields.append(f)
        curves.extend(rows)
        done = rd / "done.json"
        if done.exists():
            s = json.loads(done.read_text())
            s.pop("provenance", None)
            summary.append(s)
    if curves:
        write_csv_rows(sweep_dir / "curves.csv", fields, curves)
    if summary:
        write_csv(sweep_dir / "summary.csv", summary, prov)
    return curves, summary


def run_sweep(plan: SweepPlan | str | None = None, out_dir: str | Path | None = None,
              device: str | None = None, quick: bool = False, progress: bool = True,
              fit: bool = True, threads: int | None = None, deadline: float | None = None) -> Path:
    """Run (or resume) every run of `plan` and write curves.csv, summary.csv, experiments.json,
    then the fits and plots (scaling.sweep_fits, scaling.plots). Returns the folder.
    deadline (time.monotonic()): runs not started by then are left for a resume and listed in
    not_run.json; the fits use the runs that finished.

    plan: a SweepPlan, a preset-set name ("cpu" / "gpu") or None for this device's default.
    threads: torch CPU threads while it runs (default 1 on the CPU: the ladder's small matmuls
    gain little from a second thread and lose a lot when another process holds the core)."""
    dev = _device(device)
    if torch.device(dev).type == "cpu":
        saved = torch.get_num_threads()
        torch.set_num_threads(threads or 1)
        try:
            return _run_sweep(plan, out_dir, dev, quick, progress, fit, deadline)
        finally:
            torch.set_num_threads(saved)
    return _run_sweep(plan, out_dir, dev, quick, progress, fit, deadline)


def _run_sweep(plan, out_dir, dev: str, quick: bool, progress: bool, fit: bool,
               deadline: float | None = None) -> Path:
    if plan is None:
        plan = default_plan(dev, quick=quick)
    elif isinstance(plan, str):
        plan = build_plan(plan, quick=quick)
    sweep_dir = Path(out_dir) if out_dir is not None else default_sweep_dir(
        dev, plan.quick or quick, plan.isoflop is not None)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(dev)
    corpus, tr = load_plan_corpora(plan)
    runs = resolve_plan(plan, corpus.vocab_size, dev, data_identity(corpus, tr))
    write_json(sweep_dir / "sweep.json", {
        "plan": plan.to_dict(), "device": dev, "corpus": corpus.info(),
        "transfer": tr.info() if tr is not None else None,
        "runs": [{"name": r.name, "kind": r.kind, "label": r.label,
                  **({"budget": r.budget, "budget_convention": r.budget_convention}
                     if r.budget else {})} for r in runs]}, prov)

    bar = Progress({r.name: r.cost for r in runs}, enabled=progress)
    diverged: list[str] = []
    not_run: list[str] = []
    try:
        for i, r in enumerate(runs, 1):
            rd = sweep_dir / "runs" / r.name
            if (rd / "done.json").exists() or (rd / "diverged.json").exists():
                bar.start_run(r.name, i, skipped=True)
                if (rd / "diverged.json").exists():
                    diverged.append(r.name)
                continue
            if deadline is not None and time.monotonic() > deadline:
                not_run.append(r.name)
                continue
            bar.start_run(r.name, i)
            try:
                train(r.model, r.train, corpus, rd, transfer=tr, name=r.name, kind=r.kind,
                      progress=bar.update, extra_meta={"label": r.label})
            except TrainingDiverged as e:
                diverged.append(r.name)
                bar.line(f"sixn scale: {e}")
            bar.end_run(r.name)
            collect(sweep_dir, runs, prov)
    finally:
        bar.close()
    collect(sweep_dir, runs, prov)
    if not_run:
        write_json(sweep_dir / "not_run.json", {"runs": not_run, "reason": "time budget spent"}, prov)
        print(f"sixn scale: time budget spent: {len(not_run)} runs not started ({', '.join(not_run)}); "
              f"rerun without --time-budget to finish them", file=sys.stderr)
    else:
        (sweep_dir / "not_run.json").unlink(missing_ok=True)
    from .experiments import write_experiments
    write_experiments(sweep_dir)
    if fit:
        notes = fit_and_plot(sweep_dir)
        for n in notes:
            if progress or not n.endswith(" done"):  # a failed fit or plot is always said
                print(f"sixn scale: {n}", file=sys.stderr)
    return sweep_dir


def fit_and_plot(sweep_dir: Path) -> list[str]:
    """fit_sweep (writes fits.json / fits.csv), then plot_sweep on that result; say what happened.
    A failing fit or plot is reported, never raised: it must not lose the sweep's data."""
    notes = []
    try:
        result = fit_sweep(sweep_dir)
        notes.append("fits done")
        notes += [f"warning: {w}" for w in result.get("warnings", [])]
    except Exception as e:
        return [f"fits failed: {type(e).__name__}: {e}"]
    try:
        plot_sweep(sweep_dir, result)
        notes.append("plots done")
    except Exception as e:
        notes.append(f"plots failed: {type(e).__name__}: {e}")
    return notes


def sweep_status(sweep_dir: Path) -> list[dict]:
    """Each run of the sweep's plan (from sweep.json) with its state: done, diverged, partial, new."""
    meta = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    out = []
    for r in meta["runs"]:
        rd = Path(sweep_dir) / "runs" / r["name"]
        state = ("done" if (rd / "done.json").exists() else "diverged" if (rd / "diverged.json").exists()
                 else "partial" if (rd / "ckpt.pt").exists() else "new")
        s = json.loads((rd / "done.json").read_text()) if state == "done" else {}
        out.append({**r, "state": state, **{k: s.get(k) for k in ("N", "D", "val_loss", "best_val_loss",
                                                                    "b_simple", "elapsed_s", "status")}})
    return out
