"""Figures of `sixn bench` and `sixn kernels`, drawn from their rows (or the CSVs that hold them).

One function per figure, each taking rows (dicts, as written to the CSV or read back by
sixn.bench.results.read_rows)
and an output path, returning the path:
  plot_throughput      tokens/s by preset and provider (training step)
  plot_mfu             MFU (palm, and kaplan_6N_context hatched) by preset and provider; without a
                       datasheet peak, model FLOP/s over the measured GEMM roof, labelled as such
  plot_roofline        achieved TFLOP/s against arithmetic intensity (FLOPs per byte) of GEMM roof
                       and kernel rows, under the measured GEMM and bandwidth roofs
  plot_attention       kernel TFLOP/s against T, one panel per (head dim, causal), for one mode
  plot_mlp             fused linear+GELU TFLOP/s by shape and provider
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _number(r: dict, key: str):
    """r[key] when it is a finite number, else None (rows are typed, as read_rows gives them)."""
    v = r.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _step_rows(rows):
    return [r for r in rows if _number(r, "tokens_per_s") is not None
            and not str(r.get("provider", "")).startswith("roof:")]


def _grouped(rows, key):
    """{preset: {provider label: value}} in first-seen order; DDP rows labelled with their size."""
    presets, providers, val = [], [], {}
    for r in rows:
        v = _number(r, key)
        if v is None:
            continue
        ws = _number(r, "world_size") or 1
        prov = r["provider"] + (f" (DDP x{ws})" if ws > 1 else "")
        if r["preset"] not in presets:
            presets.append(r["preset"])
        if prov not in providers:
            providers.append(prov)
        val[(r["preset"], prov)] = v
    return presets, providers, val


def _bars(ax, presets, providers, val, scale=1.0, hatch=None, alpha=1.0, label=True):
    width = 0.8 / max(1, len(providers))
    for j, prov in enumerate(providers):
        xs = [i + (j - (len(providers) - 1) / 2) * width for i in range(len(presets))]
        ys = [val.get((p, prov), float("nan")) * scale for p in presets]
        ax.bar(xs, ys, width, label=prov if label else None, color=f"C{j}", hatch=hatch,
               alpha=alpha, edgecolor="black" if hatch else None)
    ax.set_xticks(range(len(presets)))
    ax.set_xticklabels(presets, rotation=20, ha="right")


def _title(rows, what):
    devs = sorted({str(r.get("device")) for r in rows if r.get("device")})
    return f"{what}\n{'; '.join(devs)}"


def plot_throughput(rows: list[dict], path: str | Path) -> Path:
    rows = _step_rows(rows)
    if not rows:
        raise ValueError("plot_throughput: no training-step rows with tokens_per_s")
    presets, providers, val = _grouped(rows, "tokens_per_s")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(presets) + 3), 4.5))
    _bars(ax, presets, providers, val)
    ax.set_yscale("log")
    ax.set_ylabel("tokens / s (median over timed steps)")
    ax.set_title(_title(rows, "training-step throughput"))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_mfu(rows: list[dict], path: str | Path) -> Path:
    rows = _step_rows(rows)
    if not rows:
        raise ValueError("plot_mfu: no training-step rows")
    presets, providers, val = _grouped(rows, "mfu")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(presets) + 3), 4.5))
    if val:
        _bars(ax, presets, providers, val, scale=100)
        _, _, ctx = _grouped(rows, "mfu_kaplan_6N_context")
        _bars(ax, presets, providers, ctx, scale=100, hatch="//", alpha=0.35, label=False)
        ax.set_ylabel("MFU % of the datasheet peak\n(solid: palm, hatched: kaplan_6N_context)")
        ax.set_title(_title(rows, "model FLOPs utilisation"))
    else:
        presets, providers, val = _grouped(rows, "mfu_vs_measured_roof")
        if not val:
            raise ValueError("plot_mfu: rows have neither MFU nor mfu_vs_measured_roof")
        _bars(ax, presets, providers, val, scale=100)
        ax.set_ylabel("model FLOP/s (palm), % of the MEASURED\nGEMM roof (no datasheet peak)")
        ax.set_title(_title(rows, "model FLOP/s against the measured roof"))
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_roofline(rows: list[dict], path: str | Path, gemm_tflops: float,
                  bandwidth_gbs: float) -> Path:
    """Points: rows with `intensity` (FLOPs/byte) and `tflops`, one marker per provider/mode."""
    if not gemm_tflops or not bandwidth_gbs or gemm_tflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError(f"plot_roofline needs positive measured roofs, got gemm_tflops="
                         f"{gemm_tflops}, bandwidth_gbs={bandwidth_gbs}")
    pts = [r for r in rows if _number(r, "intensity") and _number(r, "tflops")]
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = [r["intensity"] for r in pts]
    lo = min(xs + [gemm_tflops * 1e3 / bandwidth_gbs]) / 4
    hi = max(xs + [gemm_tflops * 1e3 / bandwidth_gbs]) * 4
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [min(gemm_tflops, bandwidth_gbs * x / 1e3) for x in grid], "k-", lw=1.5,
            label=f"measured roofs: {gemm_tflops:.3g} TFLOP/s, {bandwidth_gbs:.4g} GB/s")
    groups: dict[str, list] = {}
    for r in pts:
        label = str(r.get("provider"))
        if r.get("family"):
            label = f"{r['family']} {r.get('mode', '')} {label}".strip()
        groups.setdefault(label, []).append(r)
    markers = "os^vD<>ph*"
    for i, (label, rs) in enumerate(groups.items()):
        ax.scatter([r["intensity"] for r in rs], [r["tflops"] for r in rs], s=22,
                   marker=markers[i % len(markers)], color=f"C{i % 10}", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (model FLOPs per minimum byte moved)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(_title(pts or rows, "roofline"))
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_attention(rows: list[dict], path: str | Path, mode: str) -> Path:
    rs = [r for r in rows if r.get("family") == "attention" and r.get("mode") == mode
          and _number(r, "tflops") is not None]
    if not rs:
        raise ValueError(f"plot_attention: no attention rows for mode {mode!r}")
    panels = sorted({(r["D"], str(r["causal"])) for r in rs})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (D, causal) in zip(axes[0], panels):
        sub = [r for r in rs if r["D"] == D and str(r["causal"]) == causal]
        for i, prov in enumerate(dict.fromkeys(r["provider"] for r in sub)):
            pr = sorted((r for r in sub if r["provider"] == prov), key=lambda r: r["T"])
            ax.plot([r["T"] for r in pr], [r["tflops"] for r in pr], "o-",
                    color=f"C{i}", label=prov)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T")
        ax.set_title(f"D={D}, causal={causal}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{mode} TFLOP/s (FA convention)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(_title(rs, f"attention {mode}"), fontsize=9)
    return _save(fig, path)


def plot_mlp(rows: list[dict], path: str | Path) -> Path:
    rs = [r for r in rows if r.get("family") == "mlp" and _number(r, "tflops") is not None]
    if not rs:
        raise ValueError("plot_mlp: no mlp rows")
    modes = list(dict.fromkeys(r["mode"] for r in rs))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sub = [r for r in rs if r["mode"] == mode]
        shapes = list(dict.fromkeys(r["shape"] for r in sub))
        val = {(r["shape"], r["provider"]): r["tflops"] for r in sub}
        _bars(ax, shapes, list(dict.fromkeys(r["provider"] for r in sub)), val)
        ax.set_title(f"linear + GELU(tanh), {mode}")
        ax.set_ylabel("TFLOP/s (GEMM model FLOPs)")
        ax.legend(fontsize=8)
    fig.suptitle(_title(rs, "MLP up-projection (M x N x K)"), fontsize=9)
    return _save(fig, path)
