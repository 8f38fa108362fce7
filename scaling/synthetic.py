"""Synthetic sweeps in the tables' schema, from known laws: for tests, demos and plot previews.

synthetic_sweep writes curves.csv and summary.csv of a ladder / data-limited / shape sweep whose
losses follow a Chinchilla-form law with log-normal noise; the compute columns come from
model.flops for each shape, so every convention's C is the one sixn's accounting gives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sixn.bench.results import write_csv, write_json
from sixn.model.config import GPTConfig
from sixn.model.flops import accounting, pf_days
from sixn.scaling.laws import chinchilla_loss

SYNTHETIC_LAW = {"E": 1.0, "A": 40.0, "B": 60.0, "alpha": 0.30, "beta": 0.28}
SYNTHETIC_B_CRIT = {"alpha_B": 0.21, "B_star": 2e4}


def synthetic_sweep(sweep_dir: str | Path, *, seed: int = 0, noise: float = 0.005,
                    measured: bool = True, law: Mapping[str, float] = SYNTHETIC_LAW,
                    n_ctx: int = 64, n_vocab: int = 256, n_eval: int = 24,
                    ladder: Sequence[tuple[int, int]] = ((1, 32), (2, 32), (2, 64), (4, 64),
                                                         (4, 128), (4, 256), (8, 256), (8, 384)),
                    ladder_tokens: float = 3e7, data_shape: tuple[int, int] = (4, 128),
                    data_tokens: Sequence[float] = (1e5, 3e5, 1e6, 3e6, 1e7),
                    shapes: Sequence[tuple[int, int]] = ((2, 128), (4, 91), (8, 64), (16, 45)),
                    kinds: Sequence[str] = ("ladder", "data", "shape")) -> Path:
    """Write curves.csv and summary.csv of a sweep whose losses follow a known Chinchilla-form law
    L(N, D) (N non-embedding, D tokens seen) with log-normal noise, whose b_simple follows
    B_crit(L) = B_star / L^(1/alpha_B) (tokens), and whose compute columns come from
    model.flops for each shape. measured=False leaves C_measured empty."""
    rng = np.random.default_rng(seed)
    sweep = Path(sweep_dir)
    runs: list[tuple[str, str, int, int, float]] = []
    if "ladder" in kinds:
        runs += [(f"ladder-L{l}-d{d}", "ladder", l, d, ladder_tokens) for l, d in ladder]
    if "data" in kinds:
        runs += [(f"data-L{data_shape[0]}-d{data_shape[1]}-D{D:.0e}", "data", *data_shape, D)
                 for D in data_tokens]
    if "shape" in kinds:
        runs += [(f"shape-L{l}-d{d}", "shape", l, d, ladder_tokens / 3) for l, d in shapes]
    curves, summary = [], []
    batch_size = 32
    bt = batch_size * n_ctx
    for name, kind, n_layer, d_model, D_total in runs:
        cfg = GPTConfig.from_shape(n_layer, d_model, n_ctx=n_ctx, n_vocab=n_vocab,
                                   n_head=max(1, d_model // 32) if d_model % 32 == 0 else 1)
        acc = accounting(cfg)
        per_tok = {c: acc.training_per_token[c] for c in ("kaplan_6N", "kaplan_6N_head",
                                                          "kaplan_6N_context", "full_model")}
        per_tok["measured"] = acc.training_per_token["full_model"] * 1.04 if measured else math.nan
        data_tokens = D_total if kind == "data" else None
        seen = 2 * D_total if kind == "data" else D_total  # data runs repeat their data once
        steps_total = max(2, int(round(seen / bt)))
        steps = np.unique(np.geomspace(1, steps_total, n_eval).round().astype(int))
        best, last = math.inf, None
        for s in steps:
            tokens = float(s * bt)
            clean = float(chinchilla_loss(law, acc.N, min(tokens, data_tokens or tokens)))
            val = clean * math.exp(rng.normal(0, noise))
            row = {"run": name, "kind": kind, "n_layer": n_layer, "d_model": d_model,
                   "n_head": cfg.n_head, "d_ff": cfg.d_ff, "n_ctx": n_ctx, "n_vocab": n_vocab,
                   "N": acc.N, "N_total": acc.params.total, "batch_size": batch_size,
                   "batch_tokens": bt, "data_tokens": data_tokens or "", "step": int(s), "tokens": tokens, "lr": 1e-3,
                   "train_loss": clean * math.exp(rng.normal(0, noise)), "val_loss": val,
                   "transfer_loss": (val + 0.4) * math.exp(rng.normal(0, noise)),
                   "b_simple": SYNTHETIC_B_CRIT["B_star"] / val ** (1 / SYNTHETIC_B_CRIT["alpha_B"])
                   * math.exp(rng.normal(0, 5 * noise)),
                   "elapsed_s": s * 1e-3 * acc.N / 1e5}
            for conv, f in per_tok.items():
                C = f * tokens
                row[f"C_{conv}"] = "" if not math.isfinite(C) else C
                row[f"pf_days_{conv}"] = "" if not math.isfinite(C) else pf_days(C)
            curves.append(row)
            best = min(best, val)
            last = row
        summary.append({"run": name, "kind": kind, "N": acc.N, "N_total": acc.params.total,
                        "n_layer": n_layer, "d_model": d_model, "D": last["tokens"],
                        "data_tokens": data_tokens or "",
                        "steps": last["step"], "val_loss": last["val_loss"], "best_val_loss": best,
                        "transfer_loss": last["transfer_loss"],
                        **{f"C_{c}": last[f"C_{c}"] for c in per_tok},
                        "b_simple": last["b_simple"], "fingerprint": f"synthetic-{seed}"})
    write_csv(sweep / "curves.csv", curves)
    write_csv(sweep / "summary.csv", summary)
    return sweep

def chinchilla_optimum(law: Mapping[str, float], C) -> tuple[np.ndarray, np.ndarray]:
    """The exact N_opt and D_opt of a Chinchilla-form law under C = 6 N D:
    N_opt = G (C / 6)^a, a = beta / (alpha + beta), G = (alpha A / (beta B))^(1 / (alpha + beta))."""
    al, be = law["alpha"], law["beta"]
    G = (al * law["A"] / (be * law["B"])) ** (1.0 / (al + be))
    x = np.asarray(C, float) / 6.0
    N = G * x ** (be / (al + be))
    return N, x / N


def isoflop_table(law: Mapping[str, float], budgets: Sequence[float], *, n_sizes: int = 5,
                  span: float = 16.0, jitter: float = 0.3, noise: float = 0.005,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Rows (C, N, D, loss) of an IsoFLOP design on a Chinchilla-form law with C = 6 N D: for each
    budget, n_sizes sizes spaced geometrically over a factor `span`, centred on the law's
    optimum times exp(U(-jitter, jitter)) (a design does not know the optimum), D = C / 6N,
    loss = law(N, D) exp(noise * standard normal)."""
    rng = np.random.default_rng(seed)
    rows = []
    for C in budgets:
        n_opt, _ = chinchilla_optimum(law, C)
        centre = float(n_opt) * math.exp(rng.uniform(-jitter, jitter))
        for N in centre * span ** np.linspace(-0.5, 0.5, n_sizes):
            D = C / (6.0 * N)
            rows.append((C, N, D, float(chinchilla_loss(law, N, D)) * math.exp(rng.normal(0, noise))))
    C, N, D, L = (np.array(v) for v in zip(*rows))
    return {"C": C, "N": N, "D": D, "loss": L}


def synthetic_isoflop_sweep(sweep_dir: str | Path, runs, *, law: Mapping[str, float] = SYNTHETIC_LAW,
                            noise: float = 0.003,
                            seed: int = 0, n_eval: int = 8, measured_factor: float = 1.04) -> Path:
    """curves.csv, summary.csv and sweep.json of an IsoFLOP sweep whose final losses follow a
    Chinchilla-form law L(N, D) (N non-embedding, D tokens) with log-normal noise. `runs` are the
    plan's runs (scaling.sweep.build_plan(..., isoflop=...).runs: model, train, budget, name);
    the compute columns come from model.flops for each shape (C_measured = measured_factor x the
    full-model count). Learning curves are the law at the tokens seen so far."""
    rng = np.random.default_rng(seed)
    sweep = Path(sweep_dir)
    curves, summary = [], []
    for r in runs:
        acc = accounting(r.model, r.train.seq_len)
        per_tok = {c: acc.training_per_token[c] for c in ("kaplan_6N", "kaplan_6N_head",
                                                          "kaplan_6N_context", "full_model")}
        per_tok["measured"] = per_tok["full_model"] * measured_factor
        bt = r.train.batch_tokens
        steps = np.unique(np.linspace(r.train.steps / n_eval, r.train.steps, n_eval).round()
                          .astype(int))
        last = None
        for s in steps:
            tokens = float(s * bt)
            val = float(chinchilla_loss(law, acc.N, tokens)) * math.exp(rng.normal(0, noise))
            row = {"run": r.name, "kind": r.kind, "n_layer": r.model.n_layer,
                   "d_model": r.model.d_model, "n_head": r.model.n_head, "n_ctx": r.model.n_ctx,
                   "n_vocab": r.model.n_vocab, "N": acc.N, "N_total": acc.params.total,
                   "batch_size": r.train.batch_size, "batch_tokens": bt, "step": int(s),
                   "tokens": tokens, "val_loss": val}
            for conv, f in per_tok.items():
                row[f"C_{conv}"] = f * tokens
                row[f"pf_days_{conv}"] = pf_days(f * tokens)
            curves.append(row)
            last = row
        summary.append({**{k: last[k] for k in ("run", "kind", "N", "N_total", "n_layer",
                                                "d_model", "n_head", "n_ctx", "n_vocab",
                                                "batch_size")},
                        "D": last["tokens"], "steps": last["step"], "val_loss": last["val_loss"],
                        "best_val_loss": last["val_loss"],
                        **{f"C_{c}": last[f"C_{c}"] for c in per_tok}, "status": "done"})
    write_csv(sweep / "curves.csv", curves)
    write_csv(sweep / "summary.csv", summary)
    write_json(sweep / "sweep.json", {
        "plan": {"isoflop": {"budget_conventions": sorted({r.budget_convention for r in runs})}},
        "runs": [{"name": r.name, "kind": r.kind, "budget": r.budget,
                  "budget_convention": r.budget_convention} for r in runs],
        "synthetic": {"law": dict(law), "noise": noise, "seed": seed}})
    return sweep
