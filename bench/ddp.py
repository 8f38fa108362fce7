"""Data-parallel training steps: torch.distributed DDP, NCCL on GPUs and gloo on the CPU.

Run under torchrun, one process per device:

  torchrun --standalone --nproc_per_node 2 -m sixn.bench.ddp --device cpu --preset tiny --out ddp.json

Every rank builds the same model (same seed), wraps it in DistributedDataParallel, draws its own
random batch and times the same fixed number of steps (bench.train_step.time_steps: each step ends
with a synchronisation, so all ranks run in lock-step through DDP's gradient all-reduce). Rank 0
gathers every rank's median step time and writes one row per (preset, provider) with the per-rank
and total tokens/s (the rows of bench.train_step.make_row with world_size = the number of ranks: the
total over all devices, MFU against world_size x the datasheet peak). `sixn bench --ddp N` launches
this module through torch.distributed.run and reads rank 0's JSON (run_ddp below).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from sixn.bench.results import atomic_write_text, device_name, repo_root
from sixn.bench.step import (DEFAULT_STEPS, DEFAULT_WARMUP, build_step, check_providers,
                             error_row, flops_per_token, make_row, step_shape, time_steps)
from sixn.model.flops import accounting
from sixn.model.presets import get_preset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sixn.bench.ddp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), required=True)
    p.add_argument("--preset", action="append", required=True)
    p.add_argument("--provider", action="append", required=True)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--batch", type=int, default=None, help="sequences per device per step")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--peak-flops", type=float, default=None, help="datasheet peak of one device")
    p.add_argument("--peak-source", default=None)
    p.add_argument("--measured-roof", type=float, default=None, help="measured GEMM roof, FLOP/s")
    p.add_argument("--out", required=True, help="JSON file rank 0 writes its rows to")
    return p


@dataclass(frozen=True)
class Rank:
    """This process's place in the group and the device it times on."""

    rank: int
    world: int
    local: int
    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_rank(device: str) -> Rank:
    """Rank and device from torchrun's environment; the process group (NCCL on GPUs, gloo on
    the CPU, where the cores are shared out between the ranks of this node)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Rank(rank, world, local, dev)


def time_rank(r: Rank, cfg, provider: str, B: int, T: int, steps: int, warmup: int) -> dict:
    """This rank's step times for one (preset, provider): DDP-wrapped step, warm-up, a barrier so
    that every rank starts timing together, then `steps` timed steps; an error is reported in
    the result instead of raised, so that the ranks stay in step."""
    wrap = (lambda m: DDP(m, device_ids=[r.local])) if r.cuda else (lambda m: DDP(m))
    try:
        step, model = build_step(cfg, provider, r.device, B, T, wrap=wrap, data_seed=1000 + r.rank)
        if r.cuda:
            torch.cuda.reset_peak_memory_stats(r.device)
        for _ in range(warmup):
            step()
        dist.barrier()
        t = time_steps(step, r.device, steps)
        return {"rank": r.rank, "median_ms": t.median_ms, "p20_ms": t.p20_ms, "p80_ms": t.p80_ms,
                "mem": torch.cuda.max_memory_allocated(r.device) / 1e9 if r.cuda else None,
                "n_params": sum(p.numel() for p in model.parameters())}
    except Exception as e:  # reported in the row; the ranks stay in step
        return {"rank": r.rank, "error": f"{type(e).__name__}: {e}"[:300]}


def world_row(r: Rank, args: argparse.Namespace, preset: str, cfg, provider: str, B: int, T: int,
              steps: int, warmup: int, gathered: list[dict]) -> dict:
    """Rank 0's row from every rank's times: the slowest rank sets the pace of a synchronous
    step; tokens/s are the world's total (and per rank); an error row if any rank failed."""
    name = f"{r.world} x {device_name(r.device)}"
    errs = [g["error"] for g in gathered if "error" in g]
    if errs:
        row = error_row(preset, provider, name, B, T, errs[0])
        row["world_size"] = r.world
        return row
    slow = max(gathered, key=lambda g: g["median_ms"])
    row = make_row(preset=preset, provider=provider, device_name=name, device=r.device,
                   batch=B, seq_len=T, n_params=gathered[0]["n_params"], N=accounting(cfg, T).N,
                   steps=steps, warmup=warmup, step_ms=slow["median_ms"],
                   step_ms_p20=slow["p20_ms"], step_ms_p80=slow["p80_ms"],
                   fpt=flops_per_token(provider, cfg, B, T, r.device),
                   peak_flops=args.peak_flops, peak_source=args.peak_source,
                   measured_roof=args.measured_roof,
                   peak_mem_gb=max(g["mem"] for g in gathered) if r.cuda else None,
                   world_size=r.world)
    row["tokens_per_s_ranks"] = [B * T / (g["median_ms"] / 1e3)
                                 for g in sorted(gathered, key=lambda g: g["rank"])]
    return row


def _say(msg: str) -> None:
    print(f"[sixn bench ddp] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Rank setup, then for each (preset, provider): time on every rank, gather the times, rank 0
    makes the row; rank 0 writes every row to --out."""
    args = _parser().parse_args(argv)
    if "RANK" not in os.environ:
        print("bench.ddp: run me under torchrun (RANK / WORLD_SIZE not set)", file=sys.stderr)
        return 2
    r = setup_rank(args.device)
    try:
        providers = check_providers(args.provider, r.device)
        steps = args.steps or DEFAULT_STEPS[r.device.type]
        warmup = DEFAULT_WARMUP[r.device.type] if args.warmup is None else args.warmup
        rows = []
        for preset in args.preset:
            cfg = get_preset(preset)
            B, T = step_shape(cfg, r.device, args.batch, args.seq_len)
            for provider in providers:
                if r.rank == 0:
                    _say(f"{preset} {provider}: {r.world} ranks x batch {B} x {T} tokens ...")
                mine = time_rank(r, cfg, provider, B, T, steps, warmup)
                gathered: list = [None] * r.world
                dist.all_gather_object(gathered, mine)
                if r.rank != 0:
                    continue
                row = world_row(r, args, preset, cfg, provider, B, T, steps, warmup, gathered)
                rows.append(row)
                if row.get("error") is None:
                    _say(f"{preset} {provider}: total {row['tokens_per_s']:,.0f} tok/s, per rank "
                         f"{', '.join(f'{x:,.0f}' for x in row['tokens_per_s_ranks'])}")
        if r.rank == 0:
            atomic_write_text(args.out, json.dumps({"world_size": r.world, "rows": rows}, indent=2))
    finally:
        dist.destroy_process_group()
    return 0


def run_ddp(nproc: int, device: torch.device, presets: list[str], providers: list[str],
            steps: int | None, warmup: int | None, batch: int | None, seq_len: int | None,
            peak_flops: float | None, peak_source: str | None, measured_roof: float | None,
            timeout_s: float | None = None) -> list[dict]:
    """Launch `nproc` ranks of this module through torch.distributed.run; rank 0's rows.

    The children's output (progress) is forwarded to our stderr line by line."""
    if nproc < 1:
        raise ValueError(f"--ddp needs at least 1 process, got {nproc}")
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"--ddp {nproc} needs {nproc} GPUs, torch sees {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="sixn-ddp-") as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "sixn.bench.ddp", "--device", device.type, "--out", str(out)]
        for p in presets:
            cmd += ["--preset", p]
        for p in providers:
            cmd += ["--provider", p]
        for flag, v in (("--steps", steps), ("--warmup", warmup), ("--batch", batch),
                        ("--seq-len", seq_len), ("--peak-flops", peak_flops),
                        ("--peak-source", peak_source), ("--measured-roof", measured_roof)):
            if v is not None:
                cmd += [flag, str(v)]
        env = dict(os.environ)
        root = str(repo_root())
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line.rstrip("\n"), file=sys.stderr, flush=True)
            tail = (tail + [line.rstrip("\n")])[-20:]
        rc = proc.wait(timeout=timeout_s)
        if rc != 0 or not out.exists():
            raise RuntimeError(f"torchrun with {nproc} processes failed (exit {rc}); last output:\n"
                               + "\n".join(tail))
        return json.loads(out.read_text())["rows"]


if __name__ == "__main__":
    sys.exit(main())
