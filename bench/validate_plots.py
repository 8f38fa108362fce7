"""Plots of the 6N study (bench.commands.validate), drawn from its rows; one function per figure."""

from __future__ import annotations

from pathlib import Path

KAPLAN_LINE = 1 / 12  # d_model = n_ctx / 12


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _mark_kaplan(ax) -> None:
    ax.axvline(KAPLAN_LINE, color="grey", ls="--", lw=1)
    ax.annotate("d_model = n_ctx / 12", (KAPLAN_LINE, 0.97), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=8, color="grey")


def _vocab_markers(rows):
    vocabs = sorted({r["n_vocab"] for r in rows})
    markers = "osD^v<>p*h"
    return {v: markers[i % len(markers)] for i, v in enumerate(vocabs)}


def plot_ratios(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """measured / kaplan_6N, / kaplan_6N_context, / full_model against d_model / n_ctx."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mk = _vocab_markers(rows)
    series = (("measured_over_6N", "measured / 6N", "C0"),
              ("measured_over_6N_context", "measured / (6N + 6 L T d_attn)", "C1"),
              ("measured_over_full_model", "measured / full model", "C2"))
    for key, label, color in series:
        for v, m in mk.items():
            pts = sorted((r["d_model_over_n_ctx"], r[key]) for r in rows if r["n_vocab"] == v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], m, color=color, ls="none",
                    label=f"{label}" if v == next(iter(mk)) else None)
    for v, m in mk.items():
        ax.plot([], [], m, color="black", ls="none", label=f"n_vocab = {v}")
    ax.axhline(1.0, color="black", lw=0.8)
    _mark_kaplan(ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d_model / n_ctx")
    ax.set_ylabel("executed FLOPs per step / model count")
    ax.set_title(("6N study: " + title) if title else "6N study")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_head_share(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """The de-embedding's share of the measured compute against n_vocab / d_model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [(r["n_vocab_over_d_model"], r["head_share"], r["d_model_over_n_ctx"]) for r in rows
           if r.get("head_share") is not None]
    sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis",
                    norm=_lognorm([p[2] for p in pts]))
    fig.colorbar(sc, ax=ax, label="d_model / n_ctx")
    ax.set_xscale("log")
    ax.set_xlabel("n_vocab / d_model")
    ax.set_ylabel("head (de-embed) share of measured FLOPs")
    ax.set_ylim(0, 1)
    ax.set_title(("head share: " + title) if title else "head share")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_overheads(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Attention overheads against d_model / n_ctx: the triton kernels' causal block granularity
    and backward recompute, and the torch reference's dense square, each shown on its own."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [r["d_model_over_n_ctx"] for r in rows]
    series = (("triton_causal_block_overhead", "triton: causal block granularity", "o"),
              ("triton_backward_recompute_overhead", "triton: backward recompute", "s"),
              ("torch_attention_square_overhead", "torch reference: full T x T square", "x"))
    for key, label, m in series:
        pts = [(x, r[key]) for x, r in zip(xs, rows) if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], m, ls="none", label=label)
    _mark_kaplan(ax)
    ax.set_xscale("log")
    ax.set_xlabel("d_model / n_ctx")
    ax.set_ylabel("extra attention FLOPs / model attention FLOPs")
    ax.set_title(("attention overheads: " + title) if title else "attention overheads")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _lognorm(vals):
    from matplotlib.colors import LogNorm
    lo, hi = min(vals), max(vals)
    return LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.01)


def plot_all(rows: list[dict], out_dir: str | Path, title: str = "") -> list[Path]:
    out = Path(out_dir)
    return [plot_ratios(rows, out / "validate_ratios.png", title),
            plot_head_share(rows, out / "validate_head_share.png", title),
            plot_overheads(rows, out / "validate_overheads.png", title)]
