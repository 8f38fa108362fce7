"""Wall-clock speed-up of `sixn scale --workers N` over `--workers 1` on this machine (a benchmark,
not a test: run it on an otherwise idle machine).

  python -m sixn.scaling.speedup [--quick] [--workers 2] [--repeat 1] [--out FILE] [-- SCALE ARGS]

Runs the same sweep (the default ladder, or --quick's) with one worker and with N, each from an
empty temporary folder and as its own `sixn scale` process, alternating when --repeat > 1; keeps
each side's fastest wall clock; checks that both give the same runs with the same final losses
(to 1e-6); writes the figures (the speed-up of the fastest runs, that of the medians, and each
pair's) to results/scaling/workers-<device>[-quick].json with provenance.
Exit 1 when the losses differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sixn.bench.results import device_slug, provenance, results_root, write_json

from .sweep import sweep_status

TOLERANCE = 1e-6


def timed_sweep(out: Path, workers: int, quick: bool, extra: list[str] = ()) -> float:
    """Seconds of wall clock for one `sixn scale` into `out` (fits included, as a user runs it)."""
    cmd = [sys.executable, "-m", "sixn.bench.cli", "scale", "--out", str(out), "--workers",
           str(workers), "--no-progress", "--device", "cpu"] + (["--quick"] if quick else []) \
        + list(extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return dt


def final_losses(out: Path) -> dict[str, float]:
    return {r["name"]: r["val_loss"] for r in sweep_status(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sixn.scaling.speedup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the --quick ladder (about a minute)")
    p.add_argument("--workers", type=int, default=2, help="workers of the parallel side (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="pairs of sweeps; the fastest of each side")
    p.add_argument("--out", type=Path, help="JSON to write (default results/scaling/workers-<device>.json)")
    p.add_argument("scale_args", nargs=argparse.REMAINDER,
                   help="after --: more arguments of both `sixn scale` commands (e.g. --sizes)")
    args = p.parse_args(argv)
    extra = args.scale_args[1:] if args.scale_args[:1] == ["--"] else args.scale_args
    if args.workers < 2 or args.repeat < 1:
        p.error("--workers must be at least 2 and --repeat at least 1")
    times: dict[int, list[float]] = {1: [], args.workers: []}
    losses: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sixn-speedup-") as tmp:
        for i in range(args.repeat):
            for n in (1, args.workers):
                out = Path(tmp) / f"w{n}-{i}"
                times[n].append(timed_sweep(out, n, args.quick, extra))
                losses[n] = final_losses(out)
                print(f"--workers {n}: {times[n][-1]:.1f} s", file=sys.stderr, flush=True)
    one, many = losses[1], losses[args.workers]
    diffs = {k: abs(one[k] - many[k]) for k in one if k in many}
    same = one.keys() == many.keys() and all(d <= TOLERANCE for d in diffs.values())
    best1, bestn = min(times[1]), min(times[args.workers])
    med1, medn = statistics.median(times[1]), statistics.median(times[args.workers])
    result = {"quick": args.quick, "scale_args": extra, "workers": args.workers, "runs": len(one),
              "wall_s_workers_1": times[1], f"wall_s_workers_{args.workers}": times[args.workers],
              "speedup": best1 / bestn, "speedup_of_medians": med1 / medn,
              "speedup_per_pair": [a / b for a, b in zip(times[1], times[args.workers])],
              "max_final_loss_difference": max(diffs.values(), default=None),
              "same_final_losses": same, "tolerance": TOLERANCE}
    out = args.out or results_root() / "scaling" / (
        f"workers-{device_slug('cpu')}" + ("-quick" if args.quick else "") + ".json")
    cmd = " ".join(["python -m sixn.scaling.speedup", *(sys.argv[1:] if argv is None else argv)])
    write_json(out, result, prov=provenance("cpu", command=cmd))
    print(json.dumps(result, indent=2))
    print(f"speed-up of --workers {args.workers} over --workers 1: {best1 / bestn:.2f}x "
          f"({best1:.1f} s -> {bestn:.1f} s, the fastest of each); {med1 / medn:.2f}x of the "
          f"medians ({med1:.1f} s -> {medn:.1f} s); final losses "
          f"{'the same' if same else 'DIFFERENT'} (max difference {result['max_final_loss_difference']:.2g}); "
          f"written to {out}", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
