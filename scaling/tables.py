"""The sweep tables as the fits read them: columns of numpy arrays, and the selections every fit
shares (which runs, which loss, which D, which compute columns).

A table is a mapping column -> array: float where every non-empty cell parses (empty -> NaN), else
str. curves.csv has one row per evaluation (cumulative compute), summary.csv one row per run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from sixn.bench import results

# Compute columns of the sweep tables, by convention (curves.csv: cumulative; summary.csv: totals).
CONVENTION_COLUMNS: dict[str, str] = {
    "kaplan_6N": "C_kaplan_6N",
    "kaplan_6N_head": "C_kaplan_6N_head",
    "kaplan_6N_context": "C_kaplan_6N_context",
    "full_model": "C_full_model",
    "measured": "C_measured",
}

Table = Mapping[str, np.ndarray]


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """A CSV (read by bench.results.read_table) as columns: float arrays for numeric columns
    (empty cells NaN), str arrays (empty cells '') for the others."""
    df = results.read_table(path)
    out: dict[str, np.ndarray] = {}
    for k in df.columns:
        c = df[k]
        if pd.api.types.is_numeric_dtype(c) and not pd.api.types.is_bool_dtype(c):
            out[str(k)] = c.astype("Float64").to_numpy(dtype=float, na_value=math.nan)
        else:
            out[str(k)] = c.astype(object).where(c.notna(), "").astype(str).to_numpy(dtype=object)
    return out


def col(t: Table, name: str, n: int | None = None, default=math.nan) -> np.ndarray:
    """Column `name`, or `default` repeated for each row when the table lacks it."""
    return np.asarray(t[name]) if name in t else np.full(nrows(t) if n is None else n, default)


def nrows(t: Table) -> int:
    return len(next(iter(t.values()))) if t else 0


def present_conventions(table: Table) -> list[str]:
    """Conventions whose compute column exists and holds at least one positive number."""
    out = []
    for conv, c in CONVENTION_COLUMNS.items():
        if c in table and table[c].dtype.kind == "f" and np.any(np.isfinite(table[c])
                                                                & (table[c] > 0)):
            out.append(conv)
    return out


def run_names(t: Table) -> np.ndarray:
    """The run of each row ("run" for a table without a run column)."""
    if "run" in t:
        return np.asarray(t["run"]).astype(str)
    return np.full(nrows(t), "run")


def kinds(t: Table) -> np.ndarray:
    """The kind of each row (ladder, data, shape, isoflop, ...); "ladder" without a kind column."""
    return np.asarray(t["kind"]).astype(str) if "kind" in t else np.full(nrows(t), "ladder")
def summary_from_curves(curves: Table) -> dict[str, np.ndarray]:
    """One row per run (its last evaluation) when summary.csv is missing."""
    run = run_names(curves)
    step = col(curves, "step", nrows(curves), 0.0)
    last = []
    for r in dict.fromkeys(run):
        idx = np.flatnonzero(run == r)
        last.append(idx[np.argmax(np.nan_to_num(step[idx], nan=-1))])
    last = np.array(last, dtype=int)
    out = {k: np.asarray(v)[last] for k, v in curves.items()}
    if "tokens" in curves:
        out["D"] = np.asarray(curves["tokens"], float)[last]
    if "val_loss" in curves:
        vl = np.asarray(curves["val_loss"], float)
        out["best_val_loss"] = np.array([np.nanmin(vl[run == r]) if np.any(np.isfinite(vl[run == r]))
                                         else np.nan for r in out.get("run", ["run"])])
    return out


def final_loss(summary: Table) -> np.ndarray:
    """Each run's best (early-stopped) validation loss, else its last one."""
    n = nrows(summary)
    best = col(summary, "best_val_loss", n)
    final = col(summary, "val_loss", n)
    return np.where(np.isfinite(best) & (best > 0), best, final).astype(float)


def dataset_size(summary: Table) -> np.ndarray:
    """Kaplan's D of each run: its dataset size (data_tokens) when the data was limited (and
    possibly repeated, with early stopping), else the tokens it saw (D)."""
    n = nrows(summary)
    seen = col(summary, "D", n).astype(float)
    limited = col(summary, "data_tokens", n).astype(float)
    return np.where(np.isfinite(limited) & (limited > 0), limited, seen)


def select(t: Table, wanted: Sequence[str] | None) -> np.ndarray:
    """Rows of the wanted kinds (all kinds for None), one-layer models left out (as Kaplan does)."""
    n = nrows(t)
    m = np.ones(n, bool)
    if wanted is not None and "kind" in t:
        m &= np.isin(kinds(t), list(wanted))
    m &= col(t, "n_layer", n, 2.0) != 1
    return m


def finite_pos(*arrays) -> np.ndarray:
    """Rows where every array is finite and > 0."""
    m = np.ones(len(arrays[0]), bool)
    for a in arrays:
        a = np.asarray(a, float)
        m &= np.isfinite(a) & (a > 0)
    return m
