"""`sixn flops`: parameters and FLOPs per token of a model, analytic or measured.

Analytic (default): Kaplan et al.'s Table 1 row by row with this model's own figure beside each
row, the rows Kaplan leaves out, parameter totals, the four FLOP conventions (training FLOPs per
token, forward + backward) and Kaplan's context term. Every number comes from model.flops.

Measured (--measure COUNTER): one training step (forward + backward) of --batch sequences of
--seq-len tokens is run under a counter (dispatch, interpreter or ncu, see bench.counters) and its
executed matmul FLOPs are set against model.flops.executed per component and in total. The summary
(JSON, and CSV with --csv) and the counter's raw output are written under
results/flops/<device>/ (or --out).

Examples:
  sixn flops --preset gpt2-small
  sixn flops --n-layer 4 --d-model 256 --n-ctx 512 --json
  sixn flops --preset tiny --measure dispatch --batch 2
  sixn flops --hf-config path/to/config.json --seq-len 4096 --json

--hf-config reads a Hugging Face config.json from disk (model.hf: gpt2, llama, mistral, qwen2,
mixtral); an unsupported model_type or field, or a malformed file, is an error naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sixn.bench import argtypes
from sixn.bench.errors import CLIError
from sixn.model.config import GPTConfig
from sixn.model.flops import CONVENTIONS, GROUPS, MOE_CONVENTIONS, accounting, fmt_flops
from sixn.model.hf import HFConfigError, config_from_hf
from sixn.model.presets import PRESETS, get_preset

SHAPE_FLAGS = ("n_layer", "d_model", "d_attn", "d_ff", "n_head", "n_ctx", "n_vocab")
MEASURE_COUNTERS = ("dispatch", "interpreter", "ncu")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help=f"named shape ({', '.join(PRESETS)}); default gpt2-small "
                                    f"unless --d-model is given")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--hf-config", metavar="PATH", default=None, type=argtypes.readable_source,
                   help="a Hugging Face config.json (or its folder) of a gpt2, llama, mistral, qwen2 "
                        "or mixtral model, read from disk")
    for f in SHAPE_FLAGS:
        p.add_argument("--" + f.replace("_", "-"), type=argtypes.positive_int, default=None, metavar="INT",
                       help=f"override {f} (d_attn, d_ff and n_head not given then follow "
                            f"Kaplan's shape)" if f == "d_model" else f"override {f}")
    p.add_argument("--untied-head", action="store_true",
                   help="give the de-embedding its own matrix (default: tied to the token embedding)")
    p.add_argument("--no-bias", action="store_true", help="no biases in Linear and LayerNorm")
    p.add_argument("--seq-len", type=argtypes.positive_int, default=None,
                   help="sequence length T for the context terms and --measure (default n_ctx)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--csv", metavar="PATH", type=argtypes.output_file,
                   help="also write the rows (or the measured rows) as CSV")
    m = p.add_argument_group("measured FLOPs")
    m.add_argument("--measure", choices=MEASURE_COUNTERS, default=None,
                   help="count the executed FLOPs of one training step with this counter")
    m.add_argument("--batch", type=argtypes.positive_int, default=1,
                   help="sequences in the measured step (default 1)")
    m.add_argument("--backend", choices=("torch", "triton"), default="torch",
                   help="model backend for --measure (default torch)")
    m.add_argument("--device", default=None, type=argtypes.device("meta", "cpu", "cuda"),
                   help="device for --measure (default: meta for dispatch/torch, cpu for the "
                        "interpreter, cuda for ncu)")
    m.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: float32 "
                                                  "on CPU, bfloat16 on a GPU)")
    m.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="folder for the measured summary and raw counter output "
                        "(default results/flops/<device>)")


# ------------------------------------------------------------------------------------------------
# Config from flags
# ------------------------------------------------------------------------------------------------

def config_from_args(args: argparse.Namespace) -> GPTConfig:
    """The GPTConfig the flags describe; a CLIError naming the problem for a bad one."""
    over = {f: getattr(args, f) for f in SHAPE_FLAGS if getattr(args, f, None) is not None}
    hf = getattr(args, "hf_config", None)
    if hf is not None and args.preset is not None:
        raise CLIError("give --preset or --hf-config, not both")
    try:
        if hf is not None:
            base = config_from_hf(hf)
        elif args.preset is not None:
            base = get_preset(args.preset)
        else:
            base = PRESETS["gpt2-small"] if not over else GPTConfig(name="custom")
        # a new d_model: what is not given (d_attn, d_ff, n_head) follows Kaplan's shape
        derive = "d_model" in over
        kw = {}
        if args.untied_head:
            kw["tie_head"] = False
        if getattr(args, "no_bias", False):
            kw["bias"] = False
        if derive:
            cfg = GPTConfig.from_shape(
                over.get("n_layer", base.n_layer), over["d_model"],
                n_ctx=over.get("n_ctx", base.n_ctx), n_vocab=over.get("n_vocab", base.n_vocab),
                d_attn=over.get("d_attn"), d_ff=over.get("d_ff"), n_head=over.get("n_head"),
                tie_head=kw.get("tie_head", base.tie_head), bias=kw.get("bias", base.bias),
                name="custom")
        elif over or kw:
            named = args.preset is not None or hf is not None
            name = base.name if not over else (f"{base.name}-custom" if named else "custom")
            cfg = base.replace(**over, **kw, name=name)
        else:
            cfg = base
    except HFConfigError as e:
        raise CLIError(f"--hf-config: {e}") from None
    except ValueError as e:
        raise CLIError(str(e)) from None
    if args.seq_len is not None and not 1 <= args.seq_len <= cfg.n_ctx:
        raise CLIError(f"--seq-len must be in [1, n_ctx={cfg.n_ctx}], got {args.seq_len}")
    return cfg


# ------------------------------------------------------------------------------------------------
# Analytic table
# ------------------------------------------------------------------------------------------------

def _int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def format_table(acc_dict: dict) -> str:
    """The readable table of `sixn flops` from accounting(cfg).to_dict()."""
    c, p, T = acc_dict["config"], acc_dict["params"], acc_dict["seq_len"]
    rows = acc_dict["rows"]
    out = [f"model {c['name']}: n_layer={c['n_layer']} d_model={c['d_model']} d_attn={c['d_attn']} "
           f"d_ff={c['d_ff']} n_head={c['n_head']} n_ctx={c['n_ctx']} n_vocab={c['n_vocab']} "
           f"head={'tied' if c['tie_head'] else 'untied'} bias={c['bias']}; T={T}"]
    variant = _variant_line(c)
    out += ([variant] if variant else []) + [""]
    hdr = f"{'component':<27} {'params':>14} {'Kaplan fwd/tok':>16} {'model fwd/tok':>16} {'fwd+bwd/tok':>16}"
    out += ["Kaplan's Table 1 (forward FLOPs per token; a multiply-add = 2 FLOPs)", hdr, "-" * len(hdr)]
    kap = [r for r in rows if r["kaplan_forward_flops"] is not None]
    rest = [r for r in rows if r["kaplan_forward_flops"] is None]
    for r in kap:
        out.append(f"{r['component']:<27} {_int(r['params']):>14} {_int(r['kaplan_forward_flops']):>16} "
                   f"{_int(r['forward_flops']):>16} {_int(r['forward_flops'] + r['backward_flops']):>16}")
    out += ["", "rows Kaplan leaves out (fixed per-element conventions; see model/flops.py)", hdr,
            "-" * len(hdr)]
    for r in rest:
        out.append(f"{r['component']:<27} {_int(r['params']):>14} {'-':>16} "
                   f"{_int(r['forward_flops']):>16} {_int(r['forward_flops'] + r['backward_flops']):>16}")
    out += ["", "parameters",
            f"  non-embedding N   {p['nonembedding']:>16,}   (Kaplan's N = 2 d_model n_layer (2 d_attn + d_ff))",
            f"  embedding         {p['embedding']:>16,}   (token{' + position' if c.get('pos', 'learned') == 'learned' else ''}{'' if c['tie_head'] else ' + untied head'})",
            f"  biases, norms     {p['other']:>16,}",
            f"  total             {p['total']:>16,}"]
    if c.get("n_expert"):
        out += [f"  active per token  {p['active']:>16,}   (top_{c['top_k']} of {c['n_expert']} experts; "
                f"non-embedding {p['nonembedding_active']:,})"]
    out += [""]
    fpt = acc_dict["flops_per_token"]
    six = fpt["kaplan_6N"]
    out += ["training FLOPs per token (forward + backward)",
            f"  {'convention':<20} {'FLOPs/token':>18} {'':>10} {'/ 6N':>8}"]
    for k in CONVENTIONS + (MOE_CONVENTIONS if c.get("n_expert") else ()):
        out.append(f"  {k:<20} {fpt[k]:>18,} {fmt_flops(fpt[k]):>10} {fpt[k] / six:>8.4f}")
    ctx = acc_dict["C_forward"] - 2 * acc_dict["N"]
    out += ["", f"Kaplan's context term (forward) 2 n_layer n_ctx d_attn = {ctx:,} FLOPs/token "
                f"= {ctx / (2 * acc_dict['N']):.4f} of 2N; it matters when d_model < n_ctx / 12 "
                f"(here d_model / n_ctx = {c['d_model'] / T:.3g})"]
    return "\n".join(out)


def _variant_line(c: dict) -> str:
    """The fields that differ from Kaplan's GPT, in one line ('' for his GPT)."""
    parts = []
    if c.get("n_kv_head") not in (None, c["n_head"]):
        parts.append(f"n_kv_head={c['n_kv_head']}")
    for f, default in (("mlp", "gelu"), ("norm", "layernorm"), ("pos", "learned")):
        if c.get(f, default) != default:
            parts.append(f"{f}={c[f]}")
    for f in ("qkv_bias", "proj_bias", "mlp_bias", "window"):
        if c.get(f) is not None:
            parts.append(f"{f}={c[f]}")
    if c.get("n_expert"):
        parts.append(f"experts={c['n_expert']} top_k={c['top_k']} shared={c['n_shared_expert']} "
                     f"d_expert={c['d_expert'] or c['d_ff']} dense_layers={c['n_dense_layer']}")
    return ("variant: " + " ".join(parts)) if parts else ""


def analytic_json(cfg: GPTConfig, seq_len: int | None) -> dict:
    d = accounting(cfg, seq_len).to_dict()
    d["context_term_forward"] = d["C_forward"] - 2 * d["N"]
    return d


# ------------------------------------------------------------------------------------------------
# Measured
# ------------------------------------------------------------------------------------------------

def measured_rows(count_dict: dict, analytic: dict) -> list[dict]:
    """Per-group rows: measured vs analytic executed matmul FLOPs, and the ratio."""
    rows = []
    for g in GROUPS:
        if g == "other" and not count_dict["by_group"].get(g):
            continue  # element-wise work: no counter measures it as matmul FLOPs
        m, a = count_dict["by_group"].get(g, 0), analytic.get(g, 0)
        rows.append({"component": g, "measured": m, "analytic_executed": a,
                     "ratio": (m / a) if a else None})
    m, a = count_dict["measured_total"], sum(r["analytic_executed"] for r in rows)
    rows.append({"component": "total", "measured": m, "analytic_executed": a,
                 "ratio": (m / a) if a else None})
    return rows


def format_measured(summary: dict) -> str:
    c = summary["config"]
    out = [f"{summary['counter']} counter, backend {summary['backend']}, {summary['device']} "
           f"{summary['dtype']}: one training step of {summary['batch']} x {summary['seq_len']} "
           f"tokens, model {c['name']} (L={c['n_layer']} d={c['d_model']} T={summary['seq_len']} "
           f"V={c['n_vocab']})", ""]
    hdr = f"{'component':<12} {'measured':>20} {'analytic executed':>20} {'ratio':>10}"
    out += [hdr, "-" * len(hdr)]
    for r in summary["rows"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.6f}"
        out.append(f"{r['component']:<12} {r['measured']:>20,} {r['analytic_executed']:>20,} {ratio:>10}")
    mt, mf = summary["measured_total"], summary["model_flops_total"]
    out += ["", f"model FLOPs of the same step (full_model): {mf:,}; measured / full_model = "
                f"{mt / mf:.4f}; measured / 6N: {mt / summary['kaplan_6N_total']:.4f}"]
    extra = summary.get("extra") or {}
    for k, v in extra.items():
        if isinstance(v, (int, float)):
            out.append(f"{k}: {v:,}")
    if summary.get("files"):
        out += ["", "written: " + ", ".join(summary["files"])]
    return "\n".join(out)


def run_measure(args: argparse.Namespace, cfg: GPTConfig) -> dict:
    from sixn.bench import counters
    from sixn.bench.results import device_slug, provenance, results_root, write_csv, write_json

    T = args.seq_len or cfg.n_ctx
    try:
        sc = counters.count_step(cfg, args.batch, T, counter=args.measure, backend=args.backend,
                                 device=args.device, dtype=args.dtype)
    except counters.CounterError as e:
        raise CLIError(str(e)) from None
    except ValueError as e:
        raise CLIError(str(e)) from None
    summary = counters.compare(sc, cfg)
    summary["rows"] = measured_rows(summary, summary["analytic_executed"])
    slug = "meta" if sc.device == "meta" else device_slug(sc.device)
    out = Path(args.out) if args.out else results_root() / "flops" / slug
    stem = f"{cfg.name}_{args.measure}_{sc.backend}_b{args.batch}_t{T}"
    prov = provenance(sc.device if sc.device != "meta" else "cpu")
    raw_path = counters.save_raw(sc, out / f"{stem}_raw", prov)
    summary["files"] = [str(out / f"{stem}.json"), str(raw_path)]
    if args.csv:
        summary["files"].append(str(args.csv))
    write_json(out / f"{stem}.json", summary, prov)
    if args.csv:
        write_csv(args.csv, [{"counter": sc.counter, "backend": sc.backend, "config": cfg.name,
                              "batch": sc.batch, "seq_len": sc.seq_len, **r}
                             for r in summary["rows"]], prov)
    return summary


def run(args: argparse.Namespace) -> int:
    if args.list_presets:
        for name, c in PRESETS.items():
            N = accounting(c).N
            print(f"{name:<14} n_layer={c.n_layer:<3} d_model={c.d_model:<5} n_head={c.n_head:<3} "
                  f"n_ctx={c.n_ctx:<5} n_vocab={c.n_vocab:<6} N={N:,}")
        return 0
    cfg = config_from_args(args)
    if args.measure:
        summary = run_measure(args, cfg)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(format_measured(summary))
        return 0
    d = analytic_json(cfg, args.seq_len)
    if args.csv:
        from sixn.bench.results import write_csv
        write_csv(args.csv, [{"config": cfg.name, "seq_len": d["seq_len"], **r} for r in d["rows"]])
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(format_table(d))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from sixn.bench.cli import main
    sys.exit(main(["flops", *sys.argv[1:]]))
