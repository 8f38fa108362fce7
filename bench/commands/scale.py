"""sixn scale: train a ladder of model sizes (and data-limited / shape runs), resumably, and fit.

Writes results/scaling/<device>/ (see scaling.sweep): curves.csv with every evaluation of every
run (losses against steps, tokens and compute under each FLOP convention, measured included),
summary.csv with one row per run, experiments.json, then the fits and plots. Rerunning the same
command skips finished runs and resumes an interrupted one from its last checkpoint.

Every run's files are read back checked before any run starts (scaling.runstate): a torn last
log line (a kill during an append) is dropped with a notice; any other damage stops the command
with one line naming the file, and --repair sets that run's files aside and trains it again. A
run that diverges (a non-finite loss, or a final loss worse than a uniform guess) is said, with or
without progress, and left out of the fits; the exit status is 1 when no run finished.

examples:
  sixn scale                       the default ladder for this device (CPU: 8 sizes over 2 decades
                                   of N, two at once on 2 cores; 12.5 min on a 2-core VM)
  sixn scale --quick               a quick ladder, 26 s on a 2-core VM (used by sixn report --quick)
  sixn scale --shape --transfer    also Kaplan's shape and transfer experiments
  sixn scale --sizes 2x32 3x64 4x96 --corpus ~/text/ --bpe 2048
  sixn scale --workers 4           four runs at once (default: every core, or every GPU)
  sixn scale --gpus-per-run 2      each run data-parallel over 2 GPUs (torchrun, DDP)
  sixn scale --launcher slurm --partition gpu --gpus-per-run 4 --time 120 --wait
  sixn scale --status              each run's state, with its Slurm job id
  sixn scale --isoflop             an IsoFLOP sweep (CPU: 4 budgets over a decade, 5 sizes each)
  sixn scale --isoflop --bpe 2048 --budget-convention kaplan_6N measured
                                   two IsoFLOP designs: budgets under 6N and under measured FLOPs

IsoFLOP sweeps (scaling.isoflop): --budgets (FLOPs under --budget-convention; default the preset
set's) and --sizes-per-budget consecutive sizes of the grid (--sizes, default the preset set's)
per budget, each run's schedule (warm-up, then cosine to its own last step) sized to end at its
budget. With several budget conventions, each gets its own runs. The fits then add Chinchilla's
approaches 1 and 2 under every convention (fits.json "compute_optimal", fig_isoflop.png).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sixn.bench import argtypes
from sixn.scaling.isoflop import (BUDGET_CONVENTIONS, DEFAULT_BUDGET_CONVENTION, MIN_STEPS,
                                  QUICK_MIN_STEPS, IsoflopDesign)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset-set", choices=("cpu", "gpu"), default=None,
                   help="ladder to run (default: gpu with a CUDA device, else cpu)")
    p.add_argument("--sizes", nargs="+", metavar="SIZE",
                   help="model sizes instead of the ladder: model.presets names (ladder-98k) or "
                        "n_layer x d_model [x n_head] (2x64, 2x64x4)")
    p.add_argument("--data-limited", action="store_true",
                   help="add data-limited runs (nested data subsets, early stopping) for L(D), L(N,D)")
    p.add_argument("--shape", action="store_true",
                   help="add the shape experiment: fixed N, n_layer against d_model and n_head")
    p.add_argument("--no-ladder", action="store_true", help="leave the ladder out (with --shape etc.)")
    p.add_argument("--isoflop", action="store_true",
                   help="an IsoFLOP sweep instead of the ladder: runs trained to fixed budgets")
    p.add_argument("--budgets", nargs="+", type=argtypes.positive_float, metavar="FLOPS",
                   help="--isoflop: compute budgets in FLOPs under --budget-convention (default: "
                        "4 over a decade, full-model 2e11 to 2e12 on the CPU)")
    p.add_argument("--budget-convention", nargs="+", metavar="CONV",
                   default=[DEFAULT_BUDGET_CONVENTION], choices=BUDGET_CONVENTIONS,
                   help="--isoflop: how a budget is counted, one design per convention "
                        "(default %(default)s; choices: %(choices)s)")
    p.add_argument("--sizes-per-budget", type=argtypes.positive_int, metavar="K",
                   help="--isoflop: sizes trained at each budget (default 5; --quick 4)")
    p.add_argument("--min-steps", type=argtypes.positive_int, metavar="S",
                   help=f"--isoflop: train a size at a budget only when its run makes at least S "
                        f"updates (default {MIN_STEPS}; --quick {QUICK_MIN_STEPS})")
    p.add_argument("--extend", type=argtypes.nonneg_int, default=2, metavar="ROUNDS",
                   help="--isoflop: rounds of adding the next size of the grid to a budget whose "
                        "lowest loss is at its smallest or largest size (default %(default)s)")
    p.add_argument("--transfer", action="store_true",
                   help="also evaluate every run on a second corpus of another kind")
    p.add_argument("--transfer-corpus", nargs="+", metavar="PATH", type=argtypes.readable_source,
                   help="the transfer corpus (default: the Python reference manual's prose)")
    p.add_argument("--quick", action="store_true", help="a short ladder (about a minute on a CPU)")
    p.add_argument("--steps", type=argtypes.positive_int,
                   help="optimizer steps per run instead of the preset's")
    p.add_argument("--out", type=argtypes.output_dir, help="sweep folder (default results/scaling/<device>/)")
    p.add_argument("--corpus", nargs="+", metavar="PATH", type=argtypes.readable_source,
                   help="text files, folders or globs, or a nanoGPT .bin (default: the Python "
                        "standard library's *.py files)")
    p.add_argument("--max-bytes", type=argtypes.positive_int, help="read at most this many bytes of text")
    p.add_argument("--bpe", type=argtypes.positive_int, metavar="VOCAB",
                   help="train a byte-level BPE of this vocabulary (needs `tokenizers`)")
    p.add_argument("--device", type=argtypes.device("cpu", "cuda"),
                   help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=argtypes.positive_int,
                   help="CPU threads for torch (default: 1 for the small CPU models, where one "
                        "thread is as fast and is not slowed down by other processes)")
    g = p.add_argument_group("where the runs train (scaling.launch)")
    g.add_argument("--workers", type=argtypes.positive_int,
                   help="runs trained at once on this machine, each in its own process pinned to "
                        "a CPU core (one thread) or to its GPUs (default: all GPUs / K, or all cores)")
    g.add_argument("--gpus-per-run", type=argtypes.positive_int, default=1, metavar="K",
                   help="train each run data-parallel over K devices under torchrun (DDP; on the "
                        "CPU K processes over gloo); default 1")
    g.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help="local: worker processes here (default); slurm: a job array through "
                        "submitit, one task per run (the sweep folder must be on a filesystem "
                        "the nodes share)")
    g.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    g.add_argument("--time", type=argtypes.positive_int, metavar="MIN",
                   help="Slurm time limit per task in minutes (default 60); a task that reaches "
                        "it is requeued and resumes from its checkpoint")
    g.add_argument("--account", help="Slurm account to charge")
    g.add_argument("--wait", action="store_true",
                   help="with --launcher slurm: wait for every run, showing progress, then fit")
    p.add_argument("--no-fit", action="store_true", help="skip the fits and plots at the end")
    p.add_argument("--repair", action="store_true",
                   help="a run whose files are damaged (a checkpoint that does not load, a log cut "
                        "short, a broken done.json) has them set aside in <run>/corrupt-<time>/ "
                        "and trains again from step 0, instead of stopping with an error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--status", action="store_true",
                   help="show each run's state (done, running, queued, failed, partial, new; "
                        "Slurm job ids) and exit")
    p.add_argument("--time-budget", type=argtypes.positive_float, default=None, metavar="S",
                   help="start no new run after S seconds; the rest wait for a resume")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from sixn.bench.errors import CLIError

    from sixn.scaling import launch
    from sixn.scaling import sweep as sw

    try:
        device = sw._device(args.device)
    except ValueError as e:
        raise CLIError(str(e)) from None
    preset_set = args.preset_set or ("gpu" if torch.device(device).type == "cuda" else "cpu")
    if preset_set == "gpu" and torch.device(device).type != "cuda":
        raise CLIError("--preset-set gpu needs a CUDA device (bf16, triton kernels); "
                       "use --preset-set cpu on this machine")
    out = args.out or sw.default_sweep_dir(device, args.quick, args.isoflop)
    if args.status:
        if not (out / "sweep.json").exists():
            raise CLIError(f"{out} holds no sweep (no sweep.json)")
        rows = _status(out)
        print(json.dumps(rows, indent=2, default=str) if args.json else _table(rows, status=True))
        return 0
    slurm_only = [f for f, v in (("--partition", args.partition), ("--time", args.time),
                                 ("--account", args.account), ("--wait", args.wait)) if v]
    if args.launcher == "local" and slurm_only:
        raise CLIError(f"{', '.join(slurm_only)} go with --launcher slurm")
    if args.launcher == "slurm" and args.time_budget is not None:
        raise CLIError("--time-budget is for --launcher local; a Slurm task's limit is --time")
    if args.launcher == "slurm" and args.workers is not None:
        raise CLIError("--workers is for --launcher local; Slurm runs as many tasks at once as "
                       "the partition allows")
    isoflop = None
    if args.isoflop:
        clash = [f for f, v in (("--steps", args.steps), ("--data-limited", args.data_limited),
                                ("--shape", args.shape), ("--no-ladder", args.no_ladder)) if v]
        if clash:
            raise CLIError(f"--isoflop sets each run's steps from its budget and runs no ladder; "
                           f"leave out {', '.join(clash)}")
    elif args.budgets or args.sizes_per_budget or args.min_steps or args.budget_convention != [
            DEFAULT_BUDGET_CONVENTION]:
        raise CLIError("--budgets, --budget-convention, --sizes-per-budget and --min-steps need "
                       "--isoflop")
    try:
        if args.isoflop:
            isoflop = IsoflopDesign(tuple(args.budgets) if args.budgets else None,
                                    args.sizes_per_budget or (4 if args.quick else 5),
                                    tuple(args.budget_convention),
                                    args.min_steps or (QUICK_MIN_STEPS if args.quick else MIN_STEPS))
        plan = sw.build_plan(preset_set, quick=args.quick, sizes=args.sizes,
                             data_limited=args.data_limited, shape=args.shape,
                             transfer=args.transfer, corpus=args.corpus, bpe_vocab=args.bpe,
                             transfer_corpus=args.transfer_corpus, steps=args.steps,
                             include_ladder=not args.no_ladder, isoflop=isoflop)
        plan.max_bytes = args.max_bytes
        check_plan_memory(plan, device)
        cfg = launch.LaunchConfig(launcher=args.launcher, workers=args.workers,
                                  gpus_per_run=args.gpus_per_run, partition=args.partition,
                                  time_min=args.time or 60, account=args.account, wait=args.wait,
                                  threads=args.threads, repair=args.repair)
    except ValueError as e:
        raise CLIError(str(e)) from None
    progress, fit = not args.no_progress, not args.no_fit
    try:
        rounds = args.extend if isoflop is not None else 0
        if args.launcher == "slurm" and not args.wait:
            rounds = 0  # the profiles are extended by a run of the command that waits

        def launch_plan(fit_now: bool) -> Path:
            if args.launcher == "slurm":
                return launch.submit_slurm(plan, out, device, cfg, progress=progress, fit=fit_now)[0]
            return launch.run_local(plan, out, device, cfg, progress=progress, fit=fit_now,
                                    deadline=deadline)
        deadline = None if args.time_budget is None else time.time() + args.time_budget
        sweep_dir = launch_plan(fit and not rounds)
        for _ in range(rounds):  # fit once, after the profiles are bracketed
            extra = sw.isoflop_extensions(plan, sweep_dir)
            if not extra:
                break
            for r in extra:
                print(f"sixn scale: {r.label}", file=sys.stderr)
            plan.runs.extend(extra)
            sweep_dir = launch_plan(False)
        if rounds and fit:
            t_fit = time.perf_counter()
            for note in launch.fit_and_plot(sweep_dir, launch.drawing_processes(device, cfg)):
                if not note.endswith(" done") or progress:
                    print(f"sixn scale: {note}", file=sys.stderr)
            launch.record_finish(sweep_dir, time.perf_counter() - t_fit)
    except (ValueError, sw.SweepBusy) as e:
        raise CLIError(str(e)) from None
    rows = _status(sweep_dir)
    submitted_only = args.launcher == "slurm" and not args.wait
    if args.json:
        exp_path = sweep_dir / "experiments.json"
        exp = json.loads(exp_path.read_text()) if exp_path.exists() and not submitted_only else {}
        exp.pop("provenance", None)
        print(json.dumps({"sweep_dir": str(sweep_dir), "runs": rows,
                          "experiments": _brief(exp)}, indent=2, default=str))
    else:
        print(f"sweep: {sweep_dir}")
        print(_table(rows, status=submitted_only))
    if submitted_only:
        return 0
    return _failures(rows, budgeted=args.time_budget is not None)


def _status(sweep_dir: Path) -> list[dict]:
    """sweep_status, with Slurm's view of the jobs when the sweep was submitted there."""
    from sixn.scaling import launch
    from sixn.scaling import sweep as sw
    rows = sw.sweep_status(sweep_dir)
    if (sweep_dir / "slurm.json").exists():
        rows = launch.status_with_slurm(sweep_dir, rows)
    return rows


def _failures(rows: list[dict], budgeted: bool = False) -> int:
    """One line per run that diverged (left out of the fits), failed or was left unfinished (not
    counting those a --time-budget left for later: not_run.json lists them); the exit status
    (2: bad input; 1: a run failed or is unfinished, or no run of the sweep finished at all)."""
    failed = [r for r in rows if r["state"] == "failed"]
    diverged = [r for r in rows if r["state"] == "diverged"]
    left = [r for r in rows if r["state"] in ("running", "queued")
            or (r["state"] in ("partial", "new") and not budgeted)]
    for r in diverged:
        print(f"sixn scale: run {r['name']} diverged at step {r.get('step')} and is left out of "
              f"the fits: {r.get('error')}", file=sys.stderr)
    for r in failed:
        print(f"sixn scale: run {r['name']} failed: {r.get('error')}", file=sys.stderr)
    if left:
        print(f"sixn scale: {len(left)} run(s) not finished ({', '.join(r['name'] for r in left)}); "
              f"rerun the command to resume them", file=sys.stderr)
    if failed:
        return 2 if all(r.get("input_error") for r in failed) else 1
    if left:
        return 1
    if rows and not any(r["state"] in ("done", "early_stopped") for r in rows) and not budgeted:
        print(f"sixn scale: error: no run of the sweep finished ({len(diverged)} of {len(rows)} "
              f"diverged): there is nothing to fit; lower the learning rate or raise the warm-up",
              file=sys.stderr)
        return 1
    return 0


def check_plan_memory(plan, device: str) -> None:
    """Every run of the plan must fit the device's memory (model.memory's estimate) before the
    first one starts: InsufficientMemory (a ValueError) names the first that does not."""
    from sixn.model.memory import bytes_per_activation, check_training_memory
    cuda = device.startswith("cuda")
    for r in plan.runs:
        model = r.model.replace(n_vocab=plan.bpe_vocab or r.model.n_vocab)
        if not cuda and model.backend == "triton":
            model = model.replace(backend="torch")
        check_training_memory(model, r.train.batch_size, r.train.seq_len, device,
                              activation_bytes=bytes_per_activation(r.train.dtype if cuda else None),
                              what=f"{r.kind} run n_layer {model.n_layer} x d_model {model.d_model} "
                                   f"at batch {r.train.batch_size}")


def _brief(exp: dict) -> dict:
    se, tr, sh = exp.get("sample_efficiency", {}), exp.get("transfer", {}), exp.get("shape", {})
    return {"larger_first_fraction": se.get("larger_first_fraction"),
            "transfer_slope": tr.get("slope"), "transfer_mean_offset": tr.get("mean_offset"),
            "shape_spread": sh.get("spread"), "shape_adjusted_spread": sh.get("adjusted_spread")}


def _table(rows: list[dict], status: bool = False) -> str:
    def f(v, fmt):
        return format(v, fmt) if v is not None else "-".rjust(int(fmt.split(".")[0]))
    head = f"{'run':<34} {'state':<13} {'N':>9} {'tokens':>9} {'val':>7} {'best':>7} {'B_simple':>9} {'s':>6}"
    if status:
        head += f" {'step':>11}  {'Slurm job':<12} who"
    lines = [head]
    for r in rows:
        line = (f"{r['name']:<34} {r['state']:<13} {f(r.get('N'), '9.3g')} {f(r.get('D'), '9.3g')} "
                f"{f(r.get('val_loss'), '7.4f')} {f(r.get('best_val_loss'), '7.4f')} "
                f"{f(r.get('b_simple'), '9.3g')} {f(r.get('elapsed_s'), '6.0f')}")
        if status:
            step = f"{r.get('step', '-')}/{r.get('steps') or '-'}" if "step" in r else "-"
            h = r.get("holder") or {}
            who = f"pid {h.get('pid')}@{h.get('host')}" if h else ""
            line += f" {step:>11}  {r.get('slurm_job') or '-':<12} {who}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    from sixn.bench.cli import main
    sys.exit(main(["scale", *sys.argv[1:]]))
