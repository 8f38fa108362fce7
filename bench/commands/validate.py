"""`sixn validate`: the 6N study. How far is C = 6N from what a training step really executes?

Over a grid of shapes spanning d_model / n_ctx from about 0.05 to 2 and several n_vocab / d_model,
one training step (forward + backward) of each shape is counted by a counter (bench.counters) and
set against three model counts of the same step (model.flops):

    measured / kaplan_6N          the 6N rule
    measured / kaplan_6N_context  6N plus Kaplan's attention context term 6 n_layer n_ctx d_attn
    measured / full_model         every row the model computes (head, element-wise work, no recompute)

and against the analytic executed count of the same kernels (measured / analytic must be 1). The
head's share of the measured compute is reported, and the attention overheads of the triton kernels
(causal block granularity, backward recompute; model.flops.attention_overheads) are shown apart.
Kaplan argued the context term is negligible when d_model > n_ctx / 12: the plots mark that line.

Results: results/validate/<device>/validate.csv and validate.json (with provenance), one raw
counter output per shape (raw_<shape>.json) and the plots, all in the same folder (--out to move it).

Counters: dispatch (default, torch backend on the meta device: any shape in about a second),
interpreter (triton backend in the Triton interpreter on the CPU: small shapes only, its own grid),
ncu (a GPU with Nsight Compute: triton backend by default).

--models: the same question for real models (model.presets.REAL_MODELS: GPT-2 to Mixtral), each at
its own context length and at 2x, 4x and 8x it. For every (model, T): the counted training FLOPs per
token of the model (full_model: every row of model.flops, exact causal triangle or window band)
against 6N, 6 N_active (experts: only the top_k a token runs) and PaLM's estimate, and what each
term contributes (head, attention context, gating, routing, norms and other element-wise rows).
Dense models are also counted by the dispatcher on the meta device (the torch reference, whose
attention is the dense T x T square) and checked against the analytic executed count; MoE models
route on data, so the meta device cannot count them (their counts are tested on small real tensors).
Written to results/validate/models/ (models.csv, models.json, models.png; --out to move it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sixn.bench import argtypes
from sixn.bench.errors import CLIError
from sixn.kernels.backends import exec_spec
from sixn.model.config import GPTConfig
from sixn.model.flops import ExecSpec, accounting, attention_overheads, executed, model_flops_per_step
from sixn.model.presets import REAL_MODELS

# (n_layer, d_model, n_ctx, n_vocab): d_model / n_ctx from 1/32 to 2, n_vocab / d_model from 0.5 to
# 390. Kaplan's shape (d_attn = d_model, d_ff = 4 d_model, heads of 64 or narrower).
DEFAULT_GRID: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 2048, 256),      # d/T 0.031
    (2, 64, 1024, 2048),     # 0.0625
    (4, 128, 2048, 50257),   # 0.0625
    (4, 128, 512, 256),      # 0.25
    (4, 256, 1024, 50257),   # 0.25
    (4, 512, 1024, 2048),    # 0.5
    (4, 256, 256, 2048),     # 1
    (8, 512, 512, 256),      # 1
    (4, 128, 128, 50257),    # 1
    (8, 512, 256, 50257),    # 2
    (2, 128, 64, 256),       # 2
)
# The Triton interpreter runs every block product in NumPy: small shapes, same span of d / T.
INTERPRETER_GRID: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 256, 64),        # d/T 0.0625
    (1, 32, 256, 256),       # 0.125
    (1, 32, 128, 64),        # 0.25
    (2, 32, 64, 256),        # 0.5
    (1, 64, 128, 512),       # 0.5
    (1, 64, 64, 64),         # 1
    (2, 32, 32, 128),        # 1
    (1, 64, 32, 256),        # 2
)
QUICK_GRID: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 128, 64),        # 0.125
    (1, 32, 32, 128),        # 1
    (1, 64, 32, 64),         # 2
)
# Nsight Compute replays every kernel of the step several times: a few shallow shapes, the same span
# of d / T and of the head's share.
NCU_GRID: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 1024, 2048),     # d/T 0.0625
    (2, 256, 256, 2048),     # 1
    (2, 128, 128, 50257),    # 1, head-dominated
)
# The largest shapes of INTERPRETER_GRID: beyond them an interpreter count takes minutes.
INTERPRETER_MAX_CTX = 256
INTERPRETER_MAX_D = 64
GRIDS = {"default": DEFAULT_GRID, "interpreter": INTERPRETER_GRID, "quick": QUICK_GRID,
         "ncu": NCU_GRID}
KAPLAN_RATIO = 1 / 12  # Kaplan: the context term is negligible where d_model > n_ctx / 12
DEFAULT_BACKEND = {"dispatch": "torch", "interpreter": "triton", "ncu": "triton"}


def shape_config(shape) -> GPTConfig:
    if isinstance(shape, GPTConfig):
        return shape
    try:
        L, d, T, V = shape
    except (TypeError, ValueError):
        raise ValueError(f"a grid shape is (n_layer, d_model, n_ctx, n_vocab) or a GPTConfig, got "
                         f"{shape!r}") from None
    return GPTConfig.from_shape(L, d, n_ctx=T, n_vocab=V, name=f"L{L}-d{d}-T{T}-V{V}")


def shape_name(cfg: GPTConfig) -> str:
    return (cfg.name if cfg.name != "custom" else
            f"L{cfg.n_layer}-d{cfg.d_model}-T{cfg.n_ctx}-V{cfg.n_vocab}")


def default_grid(counter: str, quick: bool) -> tuple:
    if quick:
        return QUICK_GRID
    return INTERPRETER_GRID if counter == "interpreter" else DEFAULT_GRID


def study_row(cfg: GPTConfig, sc, batch: int) -> dict:
    """One shape's row: measured vs the model counts and the analytic executed count."""
    from sixn.bench import counters
    T = sc.seq_len
    summary = counters.compare(sc, cfg)
    m = summary["measured_total"]
    steps = {c: model_flops_per_step(cfg, batch, T, c)
             for c in ("kaplan_6N", "kaplan_6N_context", "palm", "full_model")}
    row = {
        "shape": shape_name(cfg), "n_layer": cfg.n_layer, "d_model": cfg.d_model,
        "d_attn": cfg.d_attn, "d_ff": cfg.d_ff, "n_head": cfg.n_head, "n_ctx": cfg.n_ctx,
        "n_vocab": cfg.n_vocab, "batch": batch, "seq_len": T,
        "d_model_over_n_ctx": cfg.d_model / T, "n_vocab_over_d_model": cfg.n_vocab / cfg.d_model,
        "counter": sc.counter, "backend": sc.backend, "device": sc.device, "dtype": sc.dtype,
        "spec": summary["spec"],
        "measured": m, "analytic_executed": summary["analytic_executed_total"],
        "kaplan_6N": steps["kaplan_6N"], "kaplan_6N_context": steps["kaplan_6N_context"],
        "palm": steps["palm"], "full_model": steps["full_model"],
        "measured_over_analytic": m / summary["analytic_executed_total"],
        "measured_over_6N": m / steps["kaplan_6N"],
        "measured_over_6N_context": m / steps["kaplan_6N_context"],
        "measured_over_full_model": m / steps["full_model"],
        "head_share": sc.by_group.get("de-embed", 0) / m if m else None,
        "attention_share": sc.by_group.get("attention", 0) / m if m else None,
    }
    for g, v in sc.by_group.items():
        row[f"measured_{g}"] = v
    # attention overheads: the torch reference's dense square, and the triton kernels' tiles
    ref = attention_overheads(cfg, ExecSpec(), batch, T)
    row["torch_attention_square_overhead"] = ref["causal_block_overhead"]
    import torch
    dt = getattr(torch, sc.dtype)
    tri = exec_spec(cfg, batch, T, dt, "cuda" if sc.device.startswith("cuda") else "cpu", backend="triton")
    if tri is not None:
        ov = attention_overheads(cfg, tri, batch, T)
        row["triton_causal_block_overhead"] = ov["causal_block_overhead"]
        row["triton_backward_recompute_overhead"] = ov["backward_recompute_overhead"]
        row["triton_attention_executed_over_model"] = ov["attention_executed_over_model"]
    else:
        row["triton_causal_block_overhead"] = None
        row["triton_backward_recompute_overhead"] = None
        row["triton_attention_executed_over_model"] = None
    return row


def study_summary(rows: list[dict], complete: bool) -> dict:
    """The figures over the shapes counted so far (complete: every shape of the grid is in)."""
    if not rows:
        return {"rows": [], "complete": complete}
    worst = max(abs(r["measured_over_analytic"] - 1) for r in rows)
    return {
        "grid": [r["shape"] for r in rows], "rows": rows, "complete": complete,
        "measured_equals_analytic": all(r["measured"] == r["analytic_executed"] for r in rows),
        "max_rel_error_vs_analytic": worst, "within_1pct": worst <= 0.01,
        "d_model_over_n_ctx_range": [min(r["d_model_over_n_ctx"] for r in rows),
                                     max(r["d_model_over_n_ctx"] for r in rows)],
        "kaplan_line_d_model_over_n_ctx": KAPLAN_RATIO,
    }


def _ncu_self_check(out: Path, prov: dict) -> dict:
    """The ncu GEMM self-check, run once for the whole grid; its CSV is kept in `out` (also when
    refused: gemm_self_check.refused.csv)."""
    from sixn.bench import counters
    from sixn.bench.results import atomic_write_text, write_json
    ncu = counters.ncu
    ncu.check_environment()  # no GPU or no ncu: a one-line error before anything touches CUDA
    try:
        check = ncu.gemm_self_check()
    except ncu.NcuRefused as e:
        atomic_write_text(out / f"{ncu.GEMM_CHECK_FILE}.refused.csv", e.csv)
        raise ncu.NcuRefused(f"{e} (its CSV: {out / (ncu.GEMM_CHECK_FILE + '.refused.csv')})",
                             e.csv, e.log) from None
    atomic_write_text(out / f"{ncu.GEMM_CHECK_FILE}.csv", check["csv"])
    write_json(out / f"{ncu.GEMM_CHECK_FILE}.json", {k: v for k, v in check.items() if k != "csv"}, prov)
    return check


def run_validate(grid=None, counter: str = "dispatch", device: str | None = None,
                 out_dir: str | Path | None = None, quick: bool = False, backend: str | None = None,
                 batch: int = 1, dtype: str | None = None, plots: bool = True,
                 progress=True, deadline: float | None = None) -> dict:
    """Count one training step of every shape of `grid`, write CSV/JSON/raw outputs and plots
    under out_dir (default results/validate/<device>), and return the study as a dict.
    progress: True for a line per shape on stderr, a file to write them to, or None for none.

    validate.csv and validate.json are rewritten after every shape ("complete": false until the
    last), so an interrupted study keeps what it counted. With the ncu counter the GEMM self-check
    runs first (its CSV kept as gemm_self_check.csv); a shape whose count ncu refuses is listed
    under "refused" with its raw CSV kept (refused_<shape>.csv) and the study goes on. Shapes not
    started before `deadline` (time.monotonic()) are listed under "skipped_shapes"."""
    from sixn.bench import counters
    from sixn.bench.results import (atomic_write_text, device_slug, provenance, results_root,
                                    write_csv, write_json)
    if counter not in counters.COUNTERS:
        raise ValueError(f"unknown counter {counter!r}; supported: {', '.join(counters.COUNTERS)}")
    backend = backend or DEFAULT_BACKEND[counter]
    shapes = [shape_config(s) for s in (grid if grid is not None else default_grid(counter, quick))]
    if not shapes:
        raise ValueError("the validation grid is empty")
    if counter == "ncu":
        counters.ncu.check_environment()
    if counter == "interpreter" and progress:
        big = [c for c in shapes if c.n_ctx > INTERPRETER_MAX_CTX or c.d_model > INTERPRETER_MAX_D]
        if big:
            print(f"warning: the interpreter counter runs every block product in NumPy: "
                  f"{len(big)} of the {len(shapes)} shapes (n_ctx up to "
                  f"{max(c.n_ctx for c in big)}, d_model up to {max(c.d_model for c in big)}) take "
                  f"minutes or more each; --grid interpreter is sized for it. Progress is shown "
                  f"while each shape is counted.", file=sys.stderr, flush=True)
    run_device = device or counters.default_device(counter, backend)
    out = (Path(out_dir) if out_dir is not None else
           results_root() / "validate" / device_slug("cpu" if run_device == "meta" else run_device))
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance("cpu" if run_device == "meta" else run_device)
    if progress is True:
        progress = sys.stderr
    self_check = _ncu_self_check(out, prov) if counter == "ncu" else None
    rows, files, refused, skipped = [], [], [], []
    head = {"counter": counter, "backend": backend, "device": run_device, "batch": batch}
    if self_check is not None:
        head["gemm_self_check"] = {k: v for k, v in self_check.items() if k != "csv"}
    t_all = time.perf_counter()
    for i, cfg in enumerate(shapes):
        t0 = time.perf_counter()
        name = shape_name(cfg)
        if deadline is not None and time.monotonic() > deadline:
            skipped.append(name)
            continue
        try:
            sc = counters.count_step(cfg, batch, cfg.n_ctx, counter=counter, backend=backend,
                                     device=device, dtype=dtype, ncu_self_check=self_check)
        except counters.ncu.NcuRefused as e:
            kept = out / f"refused_{name}.csv"
            atomic_write_text(kept, e.csv)
            refused.append({"shape": name, "reason": str(e), "csv_file": kept.name})
            if progress:
                print(f"[{i + 1}/{len(shapes)}] {name:<22} REFUSED: {e} (raw CSV kept: {kept})",
                      file=progress, flush=True)
            continue
        row = study_row(cfg.replace(backend=backend), sc, batch)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        raw = counters.save_raw(sc, out / f"raw_{row['shape']}", prov)
        files.append(str(raw))
        write_csv(out / "validate.csv", rows, prov)
        write_json(out / "validate.json", {**head, **study_summary(rows, False), "refused": refused}, prov)
        if progress:
            print(f"[{i + 1}/{len(shapes)}] {row['shape']:<22} d/T={row['d_model_over_n_ctx']:<7.4g} "
                  f"measured/analytic={row['measured_over_analytic']:.6f} "
                  f"/6N={row['measured_over_6N']:.3f} /6N+ctx={row['measured_over_6N_context']:.3f} "
                  f"/full={row['measured_over_full_model']:.3f} head={row['head_share']:.3f} "
                  f"({row['seconds']:.1f} s)", file=progress, flush=True)
    if not rows:
        raise counters.CounterError("every count was refused: " + "; ".join(
            f"{r['shape']}: {r['reason']}" for r in refused))
    result = {**head, **study_summary(rows, not skipped), "refused": refused,
              "skipped_shapes": skipped, "seconds": round(time.perf_counter() - t_all, 3)}
    csv_path = write_csv(out / "validate.csv", rows, prov)
    if plots:
        from sixn.bench.validate_plots import plot_all
        files += [str(p) for p in plot_all(rows, out, title=f"{counter} counter, {backend} backend")]
    result["files"] = [str(csv_path), str(out / "validate.json"), *files]
    write_json(out / "validate.json", result, prov)
    result["provenance"] = prov
    result["out"] = str(out)
    return result


CONTEXT_MULTIPLES = (1, 2, 4, 8)
# (term, rows of model.flops.rows it sums), for what each term contributes to the counted FLOPs
TERMS = (
    ("head", ("de-embed", "loss (cross-entropy)")),
    ("attention_context", ("attention: mask", "softmax")),
    ("gating", ("gating (swiglu)", "gating (geglu)", "gelu")),
    ("routing", ("router", "routing")),
    ("norms_and_other", ("embed", "biases", "layernorms", "rmsnorms", "rope", "residual adds")),
)
QUICK_MODELS = ("gpt2-small", "llama-3-8b", "mixtral-8x7b")


def model_row(cfg: GPTConfig, T: int, multiple: int, measure: bool) -> dict:
    """One (model, T) row of the --models study: per-token training FLOPs and their terms."""
    from sixn.bench import counters
    c = cfg.replace(n_ctx=max(cfg.n_ctx, T))
    acc = accounting(c, T)
    p = acc.params
    rows = {r.component: r.forward_flops + r.backward_flops for r in acc.rows}
    full = acc.training_per_token["full_model"]
    six, six_a = acc.training_per_token["kaplan_6N"], acc.training_per_token["kaplan_6N_active"]
    row = {"model": cfg.name, "context_multiple": multiple, "seq_len": T, "n_ctx": cfg.n_ctx,
           "params_total": p.total, "params_active": p.active, "N": p.nonembedding,
           "N_active": p.nonembedding_active, "kaplan_6N": six, "kaplan_6N_active": six_a,
           "palm": acc.training_per_token["palm"], "full_model": full,
           "full_model_over_6N": full / six, "full_model_over_6N_active": full / six_a,
           "palm_over_full_model": acc.training_per_token["palm"] / full}
    for term, comps in TERMS:
        v = sum(rows.get(k, 0) for k in comps)
        row[f"{term}_flops"] = v
        row[f"{term}_share"] = v / full
    matmul_blocks = sum(rows.get(k, 0) for k in ("attention: QKV", "attention: project", "feedforward",
                                                 "feedforward: experts", "feedforward: shared experts"))
    row["block_matmuls_share"] = matmul_blocks / full
    row["measured_step"] = row["analytic_executed_step"] = None
    if measure and not c.moe:
        sc = counters.count_step(c, 1, T, counter="dispatch", device="meta")
        row["measured_step"] = sc.total
        row["analytic_executed_step"] = executed(c, 1, T).matmul_total
    return row


def plot_models(rows: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        x = [r["context_multiple"] for r in rs]
        line, = ax.plot(x, [r["full_model_over_6N"] for r in rs], marker="o", label=name)
        if any(r["params_active"] != r["params_total"] for r in rs):
            ax.plot(x, [r["full_model_over_6N_active"] for r in rs], marker="s", ls="--",
                    color=line.get_color(), label=f"{name} (vs 6 N_active)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length / the model's own context length")
    ax.set_ylabel("counted training FLOPs per token / 6N")
    ax.set_title("6N against every row of the model (real-model presets)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_models(names=None, out_dir: str | Path | None = None, quick: bool = False,
               measure: bool = True, plots: bool = True) -> dict:
    """The --models study over `names` (default every real-model preset; quick: three of them at
    their own context only). Writes models.csv, models.json (and models.png) under out_dir."""
    from sixn.bench.results import provenance, results_root, write_csv, write_json
    names = list(names or (QUICK_MODELS if quick else REAL_MODELS))
    unknown = [n for n in names if n not in REAL_MODELS]
    if unknown:
        raise ValueError(f"unknown real models {unknown}; known: {', '.join(REAL_MODELS)}")
    multiples = (1,) if quick else CONTEXT_MULTIPLES
    out = Path(out_dir) if out_dir is not None else results_root() / "validate" / "models"
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance("cpu")
    t0 = time.perf_counter()
    rows = [model_row(REAL_MODELS[n], REAL_MODELS[n].n_ctx * k, k, measure)
            for n in names for k in multiples]
    checked = [r for r in rows if r["measured_step"] is not None]
    res = {"models": names, "context_multiples": list(multiples), "rows": rows,
           "measured_equals_analytic": all(r["measured_step"] == r["analytic_executed_step"]
                                           for r in checked),
           "measured_rows": len(checked), "seconds": round(time.perf_counter() - t0, 3)}
    files = [write_csv(out / "models.csv", rows, prov)]
    if plots:
        files.append(plot_models(rows, out / "models.png"))
    res["files"] = [str(f) for f in files] + [str(out / "models.json")]
    write_json(out / "models.json", res, prov)
    return res


def format_models(res: dict) -> str:
    hdr = (f"{'model':<15} {'T':>7} {'N_total':>10} {'N_active':>10} {'full/6N':>8} {'full/6Na':>9} "
           f"{'head':>6} {'attn':>6} {'gate':>6} {'route':>6} {'other':>6} {'measured == analytic':>21}")
    out = ["6N against the counted training FLOPs per token of real models (shares of the count)", "",
           hdr, "-" * len(hdr)]
    for r in res["rows"]:
        chk = "-" if r["measured_step"] is None else str(r["measured_step"] == r["analytic_executed_step"])
        out.append(f"{r['model']:<15} {r['seq_len']:>7} {r['params_total'] / 1e9:>9.3f}B "
                   f"{r['params_active'] / 1e9:>9.3f}B {r['full_model_over_6N']:>8.3f} "
                   f"{r['full_model_over_6N_active']:>9.3f} {r['head_share']:>6.3f} "
                   f"{r['attention_context_share']:>6.3f} {r['gating_share']:>6.3f} "
                   f"{r['routing_share']:>6.3f} {r['norms_and_other_share']:>6.3f} {chk:>21}")
    over = [r for r in res["rows"] if r["full_model_over_6N"] < 1]
    out += ["", f"6N overcounts {len(over)} of {len(res['rows'])} rows (all of them MoE: 6N counts every "
                f"expert)" if over and all(r["params_active"] != r["params_total"] for r in over)
            else f"6N overcounts {len(over)} of {len(res['rows'])} rows",
            f"dispatcher count == analytic executed for all {res['measured_rows']} measured rows: "
            f"{res['measured_equals_analytic']}", "written: " + ", ".join(res["files"])]
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", action="store_true",
                   help="the study over real-model presets at 1x, 2x, 4x and 8x their context "
                        "(with --quick: three models at their own context)")
    p.add_argument("--counter", choices=("dispatch", "interpreter", "ncu"), default="dispatch",
                   help="which counter measures each step (default dispatch)")
    p.add_argument("--backend", choices=("torch", "triton"), default=None,
                   help="model backend (default: torch for dispatch, triton for interpreter / ncu)")
    p.add_argument("--grid", choices=tuple(GRIDS), default=None,
                   help="shape grid (default: 'interpreter' for the interpreter counter, else "
                        "'default')")
    p.add_argument("--quick", action="store_true", help="the 3-shape quick grid")
    p.add_argument("--batch", type=argtypes.positive_int, default=1, help="sequences per step (default 1)")
    p.add_argument("--device", default=None, type=argtypes.device("meta", "cpu", "cuda"),
                   help="device (default: the counter's)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16")
    p.add_argument("--out", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="output folder (default results/validate/<device>)")
    p.add_argument("--no-plots", action="store_true", help="skip the plots")
    p.add_argument("--json", action="store_true", help="print the study as JSON")
    p.add_argument("--time-budget", type=argtypes.positive_float, default=None, metavar="S",
                   help="count no new shape after S seconds (the skipped ones are listed)")
    p.add_argument("--record-fixtures", metavar="DIR", default=None, type=argtypes.output_dir,
                   help="ncu only: afterwards copy the recorded ncu CSVs (self-check and each shape) "
                        "into DIR (tests/data) for the CPU tests of the parser")


def format_study(res: dict) -> str:
    hdr = (f"{'shape':<22} {'d/T':>7} {'V/d':>7} {'measured':>18} {'/analytic':>10} {'/6N':>7} "
           f"{'/6N+ctx':>8} {'/full':>7} {'head':>6} {'blk ovh':>8} {'recomp':>7}")
    out = [f"6N study: {res['counter']} counter, {res['backend']} backend, {res['device']}, "
           f"batch {res['batch']} (one training step = forward + backward)", "", hdr, "-" * len(hdr)]

    def f(x, fmt):
        return "-" if x is None else format(x, fmt)
    for r in res["rows"]:
        out.append(f"{r['shape']:<22} {r['d_model_over_n_ctx']:>7.4g} {r['n_vocab_over_d_model']:>7.4g} "
                   f"{r['measured']:>18,} {r['measured_over_analytic']:>10.6f} "
                   f"{r['measured_over_6N']:>7.3f} {r['measured_over_6N_context']:>8.3f} "
                   f"{r['measured_over_full_model']:>7.3f} {f(r['head_share'], '6.3f'):>6} "
                   f"{f(r['triton_causal_block_overhead'], '8.3f'):>8} "
                   f"{f(r['triton_backward_recompute_overhead'], '7.3f'):>7}")
    out += ["", f"measured == analytic executed for every shape: {res['measured_equals_analytic']} "
                f"(max relative difference {res['max_rel_error_vs_analytic']:.2e})",
            "blk ovh / recomp: the triton kernels' causal block granularity and backward recompute "
            "overheads on attention (analytic, model.flops.attention_overheads)",
            f"Kaplan's line: d_model = n_ctx / 12 (d/T = {KAPLAN_RATIO:.4f}); below it the context "
            f"term is not negligible", "", "written: " + ", ".join(res["files"][:2])
            + f" (+{len(res['files']) - 2} raw outputs and plots)"]
    for r in res.get("refused", []):
        out.append(f"REFUSED {r['shape']}: {r['reason']} (raw CSV kept: {r['csv_file']})")
    if res.get("skipped_shapes"):
        out.append(f"not counted (time budget spent): {', '.join(res['skipped_shapes'])}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from sixn.bench import counters
    if args.quick and args.grid:
        raise CLIError("--quick and --grid are exclusive; --quick is --grid quick")
    if args.record_fixtures and args.counter != "ncu":
        raise CLIError("--record-fixtures copies ncu recordings: use it with --counter ncu")
    grid = GRIDS[args.grid] if args.grid else None
    if args.models:
        try:
            res = run_models(out_dir=args.out, quick=args.quick, plots=not args.no_plots)
        except (counters.CounterError, ValueError) as e:
            raise CLIError(str(e)) from None
        print(json.dumps(res, indent=2, default=str) if args.json else format_models(res))
        return 0
    try:
        res = run_validate(grid, args.counter, args.device, args.out, quick=args.quick,
                           backend=args.backend, batch=args.batch, dtype=args.dtype,
                           plots=not args.no_plots,
                           deadline=None if args.time_budget is None else time.monotonic() + args.time_budget)
    except (counters.CounterError, ValueError) as e:
        raise CLIError(str(e)) from None
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(format_study(res))
    if args.record_fixtures:
        written = counters.ncu.record_fixtures(res["out"], args.record_fixtures)
        print(f"fixtures: {len(written)} files written to {args.record_fixtures}", file=sys.stderr)
    return 1 if res["refused"] else 0
