"""`sixn bench`: this device's roofs, and training-step throughput, MFU and HFU per preset and provider.

1. Roofs (bench.roofs), measured: the best dense GEMM (bf16 cuBLAS on a GPU, fp32 on the CPU) and a
   device-to-device copy. The datasheet peak (bench.peaks) is looked up by device name; an unknown
   device (and the CPU) has none: MFU/HFU are null and only the measured roofs are shown.
2. Training steps (bench.step) of every --preset x --provider, in one run: median tokens/s with
   the 20/80 quantiles, model TFLOP/s and MFU in the palm and kaplan_6N_context conventions, HFU from
   the executed FLOPs (null for the sdpa providers), peak memory. On a GPU the kernel families that
   take the step's time are profiled, and shown when one of sixn's H100 step targets is missed.
3. --ddp N also runs the steps under torchrun with N processes (DDP; NCCL on GPUs, gloo on the CPU):
   total and per-device tokens/s.

Output: progress on stderr; a table on stdout, or with --json a JSON list of rows. Each row has
preset, provider, device, batch, seq_len, tokens_per_s (+ _p20/_p80), step_ms, flops_per_token
(palm), flops_per_token_kaplan_6N_context, flops_per_token_executed, tflops (palm), mfu (palm, null
without a datasheet peak), mfu_kaplan_6N_context, hfu, peak_mem_gb and the provenance fields. The
roofs are rows too: provider "roof:gemm" (one per GEMM shape: tflops, intensity, and in mfu the
fraction of the datasheet peak) and "roof:copy" (bandwidth_gbs); their step-only fields are null.
Rows are appended to <out>/bench.csv (and --csv PATH) with provenance the moment each is measured,
and <out>/bench.json holds the rows so far ("complete": false) until the run's summary (rows,
roofs, peak, targets, profiles, notes) replaces it; then the plots (throughput.png, mfu.png,
roofline.png) go to <out>/. Default <out>: results/bench/<device-slug>/. --time-budget S starts no
new (preset, provider) pair after S seconds.

Memory: before a step is built its memory (model.memory: parameters, gradients, AdamW state,
activations at the batch) is checked against the device's free memory. An explicit --batch that
does not fit is an error (exit 2) naming the largest batch that does; a default batch is lowered
to it. Exit status 1 when every training-step row failed (or --ddp failed), else 0.

Examples:
  sixn bench --device cpu --preset tiny --json
  sixn bench                                   # on a GPU: ladder presets + gpt2-small, 3 providers
  sixn bench --preset gpt2-small --provider triton --provider torch-sdpa-eager --batch 32
  sixn bench --device cpu --preset tiny --ddp 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sixn.bench import argtypes
from sixn.bench import peaks as peaks_mod
from sixn.bench.errors import CLIError
from sixn.bench.results import (PROVENANCE_FIELDS, append_csv, device_name, device_slug, fmt_number,
                              provenance, read_rows, results_root, write_json)
from sixn.bench.roofs import measure_roofs, roof_rows
from sixn.bench.step import (NOTE_CPU, NOTE_SDPA_HFU, NOTE_TRITON_CPU, PROVIDERS, TARGET_PRESET,
                              check_providers, check_step_memory, check_targets, compute_dtype,
                              default_presets, default_providers, fmt_profile, resolve_device,
                              run_bench, step_shape)
from sixn.model.presets import PRESETS, get_preset


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default): cuda when torch sees a GPU, else cpu")
    p.add_argument("--preset", action="append", default=None, metavar="NAME",
                   help=f"model preset, repeatable ({', '.join(PRESETS)}); default: "
                        f"{', '.join(default_presets(torch.device('cuda')))} on a GPU, "
                        f"{', '.join(default_presets(torch.device('cpu')))} on the CPU")
    p.add_argument("--provider", action="append", default=None, metavar="NAME",
                   help=f"repeatable: {', '.join(PROVIDERS)}; default "
                        f"{', '.join(default_providers(torch.device('cuda')))} on a GPU, "
                        f"{', '.join(default_providers(torch.device('cpu')))} on the CPU")
    p.add_argument("--steps", type=argtypes.positive_int, default=None,
                   help="timed steps (default 20 GPU, 5 CPU)")
    p.add_argument("--warmup", type=argtypes.nonneg_int, default=None,
                   help="untimed warm-up steps (default 5 GPU, 2 CPU)")
    p.add_argument("--batch", type=argtypes.positive_int, default=None,
                   help="sequences per step (default: 32768 tokens / seq_len on a GPU, halved "
                        "on out-of-memory; 4 on the CPU)")
    p.add_argument("--seq-len", type=argtypes.positive_int, default=None,
                   help="tokens per sequence (default n_ctx on a GPU, min(n_ctx, 256) on the CPU)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--csv", metavar="PATH", type=argtypes.output_file, help="also append the rows to this CSV")
    p.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="output folder (default results/bench/<device-slug>/)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    p.add_argument("--ddp", type=argtypes.positive_int, default=None, metavar="N",
                   help="also time the steps under DDP with N processes (torchrun)")
    p.add_argument("--time-budget", type=argtypes.positive_float, default=None, metavar="S",
                   help="start no new (preset, provider) pair after S seconds; the rest get a row "
                        "saying they were not run")
    p.add_argument("--profile", action="store_true",
                   help="profile every step by kernel family (always done on a GPU)")


def _check_args(args, dev: torch.device) -> tuple[list[str], list[str]]:
    presets = args.preset or list(default_presets(dev))
    try:
        cfgs = [get_preset(p) for p in presets]
        providers = check_providers(args.provider or default_providers(dev), dev)
        for cfg in cfgs:
            B, T = step_shape(cfg, dev, args.batch, args.seq_len)
            if args.batch is not None:  # a batch asked for must fit; a default one is lowered
                for provider in providers:
                    check_step_memory(cfg, provider, dev, B, T)
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.ddp and dev.type == "cuda" and args.ddp > torch.cuda.device_count():
        raise CLIError(f"--ddp {args.ddp} needs {args.ddp} GPUs; torch sees {torch.cuda.device_count()}")
    return presets, providers


def format_table(summary: dict) -> str:
    """The readable report of a run from its summary dict."""
    lines = [f"sixn bench on {summary['device']} ({summary['figures']})"]
    pk = summary["peak"]
    lines.append(f"datasheet peak: {pk['tflops']:.1f} TFLOP/s {summary['peak_dtype']} dense "
                 f"({pk['name']}; {pk['source']})" if pk else
                 f"datasheet peak: none ({summary['peak_message']})")
    rf = summary["roofs"]
    lines.append(f"measured roofs: GEMM {rf['gemm_tflops']:.4g} TFLOP/s ({rf['dtype']}, best of "
                 f"{len(rf['gemms'])} shapes), copy {rf['bandwidth_gbs']:.4g} GB/s (read + write)")
    for g in rf["gemms"]:
        lines.append(f"  gemm {g['M']}x{g['N']}x{g['K']}: {g['median_ms']:.3f} ms "
                     f"[{g['p20_ms']:.3f}, {g['p80_ms']:.3f}]  {g['tflops']:.4g} TFLOP/s")
    hdr = (f"{'preset':<13} {'provider':<19} {'dev':>3} {'batch':>5} {'T':>5} {'tokens/s':>11} "
           f"{'[p20, p80]':>21} {'step ms':>9} {'TFLOP/s':>9} {'MFU palm':>8} {'MFU 6N+c':>8} "
           f"{'HFU':>6} {'vs roof':>7} {'mem GB':>7}")
    lines += ["", hdr, "-" * len(hdr)]
    for r in summary["rows"]:
        if str(r["provider"]).startswith("roof:"):
            continue
        if r.get("error"):
            lines.append(f"{r['preset']:<13} {r['provider']:<19} {r.get('world_size') or 1:>3} "
                         f"{r['batch'] or '-':>5} {r['seq_len'] or '-':>5}  error: {r['error']}")
            continue
        spread = f"[{fmt_number(r['tokens_per_s_p20'], ',.0f')}, {fmt_number(r['tokens_per_s_p80'], ',.0f')}]"
        lines.append(
            f"{r['preset']:<13} {r['provider']:<19} {r['world_size']:>3} {r['batch']:>5} "
            f"{r['seq_len']:>5} {fmt_number(r['tokens_per_s'], ',.0f'):>11} {spread:>21} "
            f"{fmt_number(r['step_ms'], '.2f'):>9} {fmt_number(r['tflops'], '.4g'):>9} "
            f"{fmt_number(r['mfu'], '.1%'):>8} {fmt_number(r['mfu_kaplan_6N_context'], '.1%'):>8} "
            f"{fmt_number(r['hfu'], '.1%'):>6} {fmt_number(r['mfu_vs_measured_roof'], '.1%'):>7} "
            f"{fmt_number(r['peak_mem_gb'], '.2f'):>7}")
    lines.append("(tokens/s: median over the timed steps, with the 20th and 80th percentiles; "
                 "TFLOP/s: palm model FLOPs; vs roof: palm FLOP/s over the measured GEMM roof; "
                 "dev: devices, DDP totals over all of them)")
    if summary.get("targets"):
        lines += ["", "sixn's H100 targets (measured in this run):"]
        for t in summary["targets"]:
            state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            val = "-" if t["value"] is None else f"{t['value']:.4g}"
            lines.append(f"  {state:<12} {t['target']}: {val} (goal >= {t['goal']}) {t['detail']}")
    for key in summary.get("profiles_shown", []):
        prof = summary["profiles"][key]
        lines += ["", f"time per kernel family, {key} (profiler):", fmt_profile(prof["ms"], prof["step_ms"])]
    if summary["notes"]:
        lines += [""] + [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


def _say(msg: str) -> None:
    print(f"[sixn bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class _Device:
    """The device of a run and what sixn knows of it before measuring."""
    dev: torch.device
    name: str
    gpu: bool
    peak: peaks_mod.Peak | None
    peak_dtype: str
    peak_flops: float | None
    peak_message: str | None
    notes: list[str]


def _device(dev: torch.device, providers: list[str]) -> _Device:
    """Step 1: the datasheet peak of the device (none for the CPU or an unknown GPU) and the notes
    that qualify every figure of the run."""
    name, gpu = device_name(dev), dev.type == "cuda"
    peak = peaks_mod.lookup(name) if gpu else None
    notes: list[str] = []
    peak_message = None
    if not gpu:
        notes += [NOTE_CPU, NOTE_TRITON_CPU]
        peak_message = "a CPU has no datasheet peak in sixn: MFU/HFU null, measured roofs only"
    elif peak is None:
        peak_message = peaks_mod.unknown_message(name)
        notes.append(peak_message)
    if any(PROVIDERS[p][0] == "sdpa" for p in providers):
        notes.append(NOTE_SDPA_HFU)
    return _Device(dev, name, gpu, peak, "bf16" if gpu else "fp32",
                   peak.for_dtype(compute_dtype(dev)) if peak else None, peak_message, notes)


def _roofs(d: _Device):
    """Step 2: the measured GEMM and copy roofs."""
    _say(f"device {d.name}; measuring roofs (GEMM {d.peak_dtype}, copy) ...")
    roofs = measure_roofs(d.dev)
    d.notes += roofs.notes
    _say(f"roofs: GEMM {roofs.gemm_flops_per_s / 1e12:.4g} TFLOP/s, copy "
         f"{roofs.bandwidth_bytes_per_s / 1e9:.4g} GB/s")
    return roofs


def _steps(args, d: _Device, presets: list[str], providers: list[str], roof_flops: float,
           on_row=None) -> tuple[list[dict], dict]:
    """Step 3: the training step of every preset x provider; its rows and their kernel-family
    profiles ({"<preset> <provider>": {"ms", "step_ms"}}), taken out of the rows. on_row(row) as
    each is made; with --time-budget no pair starts after it."""
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    rows = run_bench(presets, providers, d.dev, steps=args.steps, batch=args.batch,
                     seq_len=args.seq_len, warmup=args.warmup, peak_flops=d.peak_flops,
                     peak_source=d.peak.source if d.peak else None, measured_roof=roof_flops,
                     device_name=d.name, profile=d.gpu or args.profile, progress=_say,
                     on_row=on_row, deadline=deadline)
    profiles = {}
    for r in rows:
        prof = r.pop("profile", None)
        if prof is not None:
            profiles[f"{r['preset']} {r['provider']}"] = {"ms": prof, "step_ms": r["step_ms"]}
    return rows, profiles


def _ddp_rows(args, d: _Device, presets, providers, roof_flops: float) -> tuple[list[dict], str | None]:
    """Step 4 (--ddp N): the same steps under torchrun; (rows, error). A failure keeps the
    single-device results and is reported, not raised."""
    if not args.ddp:
        return [], None
    _say(f"DDP: launching {args.ddp} processes with torchrun ...")
    try:
        return _run_ddp(args, d.dev, presets, providers, d.peak, d.peak_flops, roof_flops), None
    except (RuntimeError, ValueError) as e:
        error = f"--ddp {args.ddp} failed: {e}"
        d.notes.append(error.splitlines()[0])
        return [], error


def _summary(args, d: _Device, rows: list[dict], step_rows: list[dict], profiles: dict, roofs,
             prov: dict) -> dict:
    """Step 5: the targets (on a GPU), provenance on every row, and the run's summary dict.

    Profiles shown in the table: all with --profile; else those of the target preset when a step
    target is missed (what limits the step); the summary keeps every profile."""
    targets = check_targets(step_rows, roofs.gemm_flops_per_s / 1e12) if d.gpu else []
    missed = any(t["met"] is False for t in targets[1:])
    shown = [k for k in profiles if args.profile or (missed and k.split()[0] == TARGET_PRESET)]
    for r in rows:
        r.update({k: prov[k] for k in PROVENANCE_FIELDS if k != "device"})
        r.setdefault("device", prov["device"])
    return {"device": d.name, "figures": "GPU, bf16 autocast" if d.gpu else "CPU figures, fp32",
            "peak": None if d.peak is None else {**d.peak.to_dict(), "tflops": d.peak_flops / 1e12},
            "peak_dtype": d.peak_dtype, "peak_message": d.peak_message, "roofs": roofs.to_dict(),
            "rows": rows, "targets": targets, "profiles": profiles, "profiles_shown": shown,
            "notes": d.notes}


class _RowWriter:
    """Rows into <out>/bench.csv (and --csv) the moment they exist, and <out>/bench.json with the
    rows so far ("complete": false) until the summary replaces it: a run stopped midway keeps
    every row it finished."""

    def __init__(self, args, d: _Device, roofs, out_dir: Path, prov: dict):
        self.args, self.d, self.roofs, self.out_dir, self.prov = args, d, roofs, out_dir, prov
        self.rows: list[dict] = []

    def add(self, rows: list[dict]) -> None:
        plain = [{k: v for k, v in r.items() if k != "profile"} for r in rows]
        for r in plain:
            r.update({k: self.prov[k] for k in PROVENANCE_FIELDS if k != "device"})
            r.setdefault("device", self.prov["device"])
        append_csv(self.out_dir / "bench.csv", plain, self.prov)
        if self.args.csv:
            append_csv(self.args.csv, plain, self.prov)
        self.rows += plain
        partial = _summary(self.args, self.d, list(self.rows), [], {}, self.roofs, self.prov)
        write_json(self.out_dir / "bench.json", {**partial, "complete": False}, self.prov)


def _write(args, summary: dict, roofs, out_dir: Path, dev: torch.device, prov: dict) -> None:
    """Step 6: the summary JSON and the plots (the rows are in the CSV already)."""
    write_json(out_dir / "bench.json", {**summary, "complete": True}, prov)
    if not args.no_plots:
        _plots(summary["rows"], roofs, out_dir, dev)


def run(args: argparse.Namespace) -> int:
    try:
        dev = resolve_device(args.device)
    except ValueError as e:
        raise CLIError(str(e)) from None
    presets, providers = _check_args(args, dev)
    prov = provenance(dev)
    out_dir = Path(args.out) if args.out else results_root() / "bench" / device_slug(dev)

    d = _device(dev, providers)
    roofs = _roofs(d)
    writer = _RowWriter(args, d, roofs, out_dir, prov)
    rows = roof_rows(roofs, d.name, d.peak_flops)
    writer.add(rows)
    step_rows, profiles = _steps(args, d, presets, providers, roofs.gemm_flops_per_s,
                                 on_row=lambda r: writer.add([r]))
    ddp_rows, ddp_error = _ddp_rows(args, d, presets, providers, roofs.gemm_flops_per_s)
    writer.add(ddp_rows)
    rows += step_rows + ddp_rows
    summary = _summary(args, d, rows, step_rows, profiles, roofs, prov)
    _write(args, summary, roofs, out_dir, dev, prov)

    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        print(format_table(summary))
        print(f"\nrows appended to {out_dir / 'bench.csv'}; summary {out_dir / 'bench.json'}")
    failed = [r for r in step_rows if r.get("error")]
    if step_rows and len(failed) == len(step_rows):
        print(f"sixn bench: error: every training-step row failed ({len(failed)} of {len(step_rows)}); "
              f"first: {failed[0]['preset']} {failed[0]['provider']}: {failed[0]['error']}",
              file=sys.stderr)
        return 1
    if ddp_error:
        print(f"sixn bench: error: {ddp_error}", file=sys.stderr)
        return 1
    return 0


def _run_ddp(args, dev, presets, providers, peak, peak_flops, roof_flops) -> list[dict]:
    from sixn.bench.ddp import run_ddp
    return run_ddp(args.ddp, dev, presets, providers, args.steps, args.warmup, args.batch,
                   args.seq_len, peak_flops, peak.source if peak else None, roof_flops)


def _plots(rows: list[dict], roofs, out_dir: Path, dev: torch.device) -> None:
    from sixn.bench import plots
    made = []
    if any(r.get("tokens_per_s") is not None for r in rows):
        made.append(plots.plot_throughput(rows, out_dir / "throughput.png"))
        made.append(plots.plot_mfu(rows, out_dir / "mfu.png"))
    # the roofline: GEMM roof shapes, and this device's kernel rows when `sixn kernels` has run
    kernel_rows = []
    kcsv = results_root() / "kernels" / "kernels.csv"
    if kcsv.exists():
        name = device_name(dev)
        kernel_rows = [r for r in read_rows(kcsv) if r.get("device") == name]
    made.append(plots.plot_roofline(rows + kernel_rows, out_dir / "roofline.png",
                                    roofs.gemm_flops_per_s / 1e12, roofs.bandwidth_bytes_per_s / 1e9))
    _say("plots: " + ", ".join(str(p) for p in made))
