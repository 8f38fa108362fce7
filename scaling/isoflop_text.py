"""The README's paragraph on an IsoFLOP sweep, written from its fits.json, summary.csv and
sweep.json: every figure is read from those files and every comparative sentence is chosen by
the figures (which way counting the head moves the exponent, whether the interval of the
difference excludes zero).

    python -c "from sixn.scaling.isoflop_text import paragraph; print(paragraph('results/scaling/cpu-isoflop'))"
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sixn.scaling.laws import PUBLISHED
from sixn.scaling.tables import col, kinds, read_table

NAMES = {"kaplan_6N": "6N", "kaplan_6N_head": "6N + head (6N + 6 d V)",
         "kaplan_6N_context": "6N + context", "full_model": "the full-model count",
         "measured": "measured (dispatch-counted) FLOPs"}


def _iv(d: dict, key: str = "a") -> str:
    lo, hi = d.get(f"{key}_interval") or (None, None)
    v = d.get(key)
    if v is None:
        return "n/a"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def paragraph(sweep_dir: str | Path) -> str:
    """Markdown: the sweep, approach 2 and 1 exponents per convention, the 6N-vs-counted
    difference, the published values beside them, and what this scale can and cannot say."""
    sweep = Path(sweep_dir)
    fits = json.loads((sweep / "fits.json").read_text())
    meta = json.loads((sweep / "sweep.json").read_text())
    s = read_table(sweep / "summary.csv")
    iso = kinds(s) == "isoflop"
    co = fits["compute_optimal"]
    designs = co.get("budget_conventions") or list(co.get("designs", {}))
    plan = meta.get("plan", {})
    prov = fits.get("provenance", {})
    N = col(s, "N")[iso]
    head = (col(s, "C_kaplan_6N_head") - col(s, "C_kaplan_6N"))[iso] / col(s, "C_full_model")[iso]
    budgets = sorted({r["budget"] for r in meta.get("runs", []) if r.get("budget")})
    elapsed = np.nansum(col(s, "elapsed_s")[iso])
    vocab = plan.get("bpe_vocab") or "256 (bytes)"
    out = [f"**Compute-optimal size on the CPU, IsoFLOP profiles** (`{prov.get('command', 'sixn scale --isoflop')}`, "
           f"`{_rel(sweep)}/`, {prov.get('device', 'CPU')}, {prov.get('date', '')[:10]}): "
           f"{int(iso.sum())} runs, each trained with its own warm-up and cosine schedule to end "
           f"at its budget; budget conventions {', '.join(designs)}; budgets from "
           f"{min(budgets):.3g} to {max(budgets):.3g} FLOPs; non-embedding N from {N.min():,.0f} "
           f"to {N.max():,.0f}; vocabulary {vocab}, so the head is "
           f"{100 * np.nanmin(head):.0f}-{100 * np.nanmax(head):.0f} % of a step's full-model "
           f"FLOPs; {elapsed / 60:.1f} minutes of training in all (sum over runs)."]
    rows = ["", "| compute counted as | approach 2: a (N_opt ~ C^a) | b (D_opt ~ C^b) | "
                "a of non-embedding N | approach 1: a | profiles |", "|---|---|---|---|---|---|"]
    for conv in fits.get("conventions", []):
        a2 = co.get("approach2", {}).get(conv)
        a1 = co.get("approach1", {}).get(conv)
        if a2 is None and a1 is None:
            continue
        how = ("measured" if a2 and not a2["rebuilt"] else "rebuilt from the runs") if a2 else "-"
        rows.append(f"| {NAMES.get(conv, conv)} | {_iv(a2) if a2 else 'n/a'} | "
                    f"{_iv(a2, 'b') if a2 else 'n/a'} | {_iv(a2, 'a_N') if a2 else 'n/a'} | "
                    f"{_iv(a1) if a1 else 'n/a'} | {how}"
                    f"{' (' + str(a2['n_points']) + ' budgets)' if a2 else ''} |")
    out += rows
    po = PUBLISHED["porian"]["N_opt"]
    out += ["", f"Published, at 1e7-1e10 parameters: Kaplan et al. a = "
                f"{PUBLISHED['kaplan']['N_opt']['a']}, Chinchilla a = "
                f"{PUBLISHED['chinchilla']['approach2']['a']} (approach 2) and "
                f"{PUBLISHED['chinchilla']['approach1']['a']} (approach 1); Porian et al. move "
                f"Kaplan's setup {po['a_kaplan_setup']} -> {po['a_head_counted']} (head FLOPs "
                f"counted) -> {po['a_short_warmup']} (short warm-up) -> {po['a_cosine_decay']} "
                f"(cosine to each run's end) -> {po['a_tuned']} (tuned)."]
    out.append("")
    out.append(_reading(co, N, budgets))
    return "\n".join(out)


def _reading(co: dict, N: np.ndarray, budgets: list[float]) -> str:
    """Sentences chosen by the figures."""
    said = []
    a2 = co.get("approach2", {})
    for key, d in sorted(co.get("differences", {}).items()):
        other = key.split(" - ", 1)[1]
        if other not in ("kaplan_6N_head", "measured", "full_model") or d.get("difference") is None:
            continue
        diff, (lo, hi) = d["difference"], d.get("interval") or (None, None)
        way = "lowers" if diff > 0 else "raises"
        sure = ("its 95 % interval excludes no change" if lo is not None and (lo > 0 or hi < 0)
                else "its 95 % interval includes no change" if lo is not None
                else "without an interval")
        said.append(f"Counting compute as {NAMES.get(other, other)} instead of 6N {way} a by "
                    f"{abs(diff):.3f} ({key}: {diff:+.3f}"
                    + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None else "") + f"; {sure}).")
    if "kaplan_6N" in a2 and ("measured" in a2 or "full_model" in a2):
        other = "measured" if "measured" in a2 else "full_model"
        d6, dm = a2["kaplan_6N"]["a"], a2[other]["a"]
        said.append("Porian et al. found counting the head lowers a; here it "
                    + ("does too." if dm < d6 else "does not."))
    said.append("What this scale can say: whether counting the head's FLOPs moves the fitted "
                "exponent, and which way, on the same kind of runs. What it cannot: the exponent "
                "itself at the scales the published values come from. These models have "
                f"{N.min():.2g} to {N.max():.2g} non-embedding parameters, the budgets span "
                f"{max(budgets) / min(budgets):.3g}x, there is one seed and one learning-rate "
                "rule per size, and the intervals cover the noise of the final losses, not the "
                "parabola's misfit of an asymmetric profile.")
    return " ".join(said)
