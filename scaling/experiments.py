"""Kaplan et al.'s other claims, measured on a sweep folder's curves.csv and summary.csv.

- shape (their Fig. 5): at a fixed non-embedding N the loss depends only weakly on the shape.
  `shape_spread` gives each "shape" run's loss relative to the best one; the loss is also shown
  moved to a common N with the local slope d log L / d log N of the ladder's final losses (a
  least-squares line through them), since the shapes' N differ by a few per cent.
- sample efficiency (their Fig. 2 and 19): larger models reach a given loss in fewer tokens.
  `tokens_to_reach` interpolates (in log tokens) where a learning curve first crosses a loss;
  `sample_efficiency` tabulates it for every ladder run at losses every run reaches, and for two
  adjacent sizes at each loss the smaller reaches in the second half of its run counts how often
  the larger got there in fewer tokens (larger_first_fraction).
- transfer (their Fig. 8): the loss on another distribution follows the validation loss with a
  roughly constant offset. `transfer_offsets` gives offset = transfer_loss - val_loss along each
  run, its drift from the first half of the run to the second, and the least-squares slope of
  transfer_loss against val_loss over every evaluation (1 means a constant offset).

`write_experiments(sweep_dir)` writes all three to <sweep>/experiments.json.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sixn.bench.results import read_rows, write_json

def by_run(curves: list[dict], kind: str | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in curves:
        if kind is None or r.get("kind") == kind:
            out.setdefault(r["run"], []).append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["step"])
    return out


def tokens_to_reach(rows: list[dict], target: float, loss: str = "val_loss") -> float | None:
    """Tokens at which the curve first reaches `target` (log-linear between evaluations)."""
    prev = None
    for r in rows:
        L, t = r.get(loss), r.get("tokens")
        if L is None or not t:
            continue
        if L <= target:
            if prev is None:
                return float(t)
            (t0, L0) = prev
            if L0 == L:
                return float(t)
            w = (L0 - target) / (L0 - L)
            return float(math.exp(math.log(t0) + w * (math.log(t) - math.log(t0))))
        prev = (t, L)
    return None


def sample_efficiency(curves: list[dict], targets: list[float] | None = None, kind: str = "ladder",
                      n_targets: int = 4) -> dict:
    """Tokens each run needs to reach each target loss; targets default to losses every run
    reaches (from the worst final loss up towards the best first evaluation)."""
    runs = by_run(curves, kind)
    runs = {k: v for k, v in runs.items() if any(r["val_loss"] is not None for r in v)}
    if not runs:
        return {"targets": [], "runs": [], "larger_first_fraction": None}
    finals = [min(r["val_loss"] for r in rows if r["val_loss"] is not None) for rows in runs.values()]
    firsts = [rows[0]["val_loss"] for rows in runs.values() if rows[0]["val_loss"] is not None]
    if targets is None:
        lo, hi = max(finals), min(firsts)
        targets = [lo] if hi <= lo else [float(x) for x in np.linspace(lo, hi, n_targets + 1)[:-1]]
    order = sorted(runs, key=lambda k: runs[k][0]["N"])
    table = []
    for name in order:
        rows = runs[name]
        table.append({"run": name, "N": rows[0]["N"],
                      "tokens": [tokens_to_reach(rows, t) for t in targets]})
    # Adjacent sizes, at the losses the smaller one reaches in the second half of its run (past
    # warm-up and the fastest early fall): does the larger one get there in fewer tokens?
    pairs, wins, total = [], 0, 0
    for a, b in zip(order, order[1:]):
        small, big = runs[a], runs[b]
        late = [r for r in small[len(small) // 2:] if r["val_loss"] is not None]
        for r in late:
            tb = tokens_to_reach(big, r["val_loss"])
            if tb is None:
                continue
            total += 1
            wins += tb <= r["tokens"]
            pairs.append({"smaller": a, "larger": b, "loss": r["val_loss"],
                          "tokens_smaller": r["tokens"], "tokens_larger": tb})
    return {"targets": [float(t) for t in targets], "runs": table, "pairs": pairs,
            "larger_first_fraction": wins / total if total else None, "n_pairs": total}


def transfer_offsets(curves: list[dict], kind: str | None = None) -> dict:
    """offset = transfer_loss - val_loss along each run, its drift, and transfer vs val's slope."""
    runs = by_run(curves, kind)
    per_run, xs, ys = [], [], []
    for name, rows in runs.items():
        pts = [(r["tokens"], r["val_loss"], r["transfer_loss"]) for r in rows
               if r.get("transfer_loss") is not None and r.get("val_loss") is not None]
        if not pts:
            continue
        off = [tr - v for _, v, tr in pts]
        half = max(1, len(off) // 2)
        early, late = float(np.mean(off[:half])), float(np.mean(off[half:] or off[-1:]))
        fall = pts[0][1] - pts[-1][1]
        per_run.append({"run": name, "N": rows[0]["N"], "kind": rows[0]["kind"],
                        "tokens": [p[0] for p in pts], "val_loss": [p[1] for p in pts],
                        "transfer_loss": [p[2] for p in pts], "offset": off,
                        "offset_early": early, "offset_late": late, "offset_drift": late - early,
                        "val_loss_fall": fall})
        xs += [p[1] for p in pts]
        ys += [p[2] for p in pts]
    if not per_run:
        return {"runs": [], "slope": None, "intercept": None,
                "note": "no transfer losses in this sweep (run with --transfer)"}
    slope = intercept = None
    if len(xs) >= 2 and np.ptp(xs) > 0:
        slope, intercept = (float(v) for v in np.polyfit(xs, ys, 1))
    return {"runs": per_run, "slope": slope, "intercept": intercept,
            "mean_offset": float(np.mean([y - x for x, y in zip(xs, ys)]))}


def ladder_slope(summary: list[dict]) -> float | None:
    """d log L / d log N through the ladder runs' best losses (least squares), or None."""
    pts = [(r["N"], r["best_val_loss"]) for r in summary
           if r.get("kind") == "ladder" and r.get("N") and r.get("best_val_loss")]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else None


def shape_spread(summary: list[dict]) -> dict:
    """Loss of each shape run relative to the best (raw, and moved to a common N)."""
    rows = [r for r in summary if r.get("kind") == "shape" and r.get("best_val_loss")]
    if not rows:
        return {"runs": [], "note": "no shape runs in this sweep (run with --shape)"}
    slope = ladder_slope(summary)
    n_ref = float(np.exp(np.mean(np.log([r["N"] for r in rows]))))
    out = []
    for r in rows:
        L = r["best_val_loss"]
        adj = L * (n_ref / r["N"]) ** slope if slope is not None else None
        out.append({"run": r["run"], "n_layer": r["n_layer"], "d_model": r["d_model"],
                    "n_head": r["n_head"], "aspect_ratio": r["d_model"] / r["n_layer"],
                    "head_dim": r["d_model"] / r["n_head"], "N": r["N"], "loss": L,
                    "loss_at_common_N": adj})
    best = min(o["loss"] for o in out)
    best_adj = min((o["loss_at_common_N"] for o in out if o["loss_at_common_N"] is not None), default=None)
    for o in out:
        o["ratio_to_best"] = o["loss"] / best
        o["adjusted_ratio_to_best"] = (o["loss_at_common_N"] / best_adj) if best_adj else None
    return {"runs": out, "N_reference": n_ref, "ladder_slope": slope,
            "spread": max(o["ratio_to_best"] for o in out) - 1.0,
            "adjusted_spread": (max(o["adjusted_ratio_to_best"] for o in out) - 1.0) if best_adj else None}


def analyse(sweep_dir: str | Path) -> dict:
    sweep_dir = Path(sweep_dir)
    curves = read_rows(sweep_dir / "curves.csv")
    summary = read_rows(sweep_dir / "summary.csv")
    return {"sample_efficiency": sample_efficiency(curves),
            "transfer": transfer_offsets(curves),
            "shape": shape_spread(summary)}


def write_experiments(sweep_dir: str | Path) -> dict:
    res = analyse(sweep_dir)
    write_json(Path(sweep_dir) / "experiments.json", res)
    return res
