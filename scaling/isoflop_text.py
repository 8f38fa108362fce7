"""The README's paragraph on an IsoFLOP sweep, written from its fits.json, summary.csv and
sweep.json: every figure is read from those files and every comparative sentence is chosen by
the figures (which way counting the head moves the exponent, whether the interval of the
difference excludes zero).

    python -c "from sixn.scaling.isoflop_text import paragraph; print(paragraph('SWEEP', ...))"
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


def _merge(folders: list[tuple[Path, dict, dict]]) -> dict:
    """One compute_optimal summary from several sweeps: under each convention the measured
    (budget-convention) approach-2 result of whichever sweep has it, else the first rebuilt one;
    approach 1 from the first sweep; differences of a against 6N from the chosen results (paired
    where both come from one sweep's resamples, independent otherwise)."""
    out: dict = {"approach1": {}, "approach2": {}, "differences": {}, "budget_conventions": []}
    chosen: dict[str, dict] = {}
    for _, fits, _ in folders:
        co = fits["compute_optimal"]
        out["budget_conventions"] += [c for c in co.get("budget_conventions", [])
                                      if c not in out["budget_conventions"]]
        for conv, r in co.get("approach1", {}).items():
            out["approach1"].setdefault(conv, r)
        for conv in fits.get("conventions", []):
            r = fits["by_convention"].get(conv, {}).get("approach2")
            if isinstance(r, dict) and "a" in r and r.get("a") is not None:
                if conv not in chosen or (chosen[conv]["rebuilt"] and not r["rebuilt"]):
                    chosen[conv] = r
    for conv, r in chosen.items():
        out["approach2"][conv] = {**r, "n_points": r["N_opt"]["n"]}
    if "kaplan_6N" in chosen:
        s6 = np.array([np.nan if v is None else v for v in chosen["kaplan_6N"]["a_samples"]])
        for conv, r in chosen.items():
            if conv == "kaplan_6N":
                continue
            sx = np.array([np.nan if v is None else v for v in r["a_samples"]])
            d = chosen["kaplan_6N"]["a"] - r["a"]
            diff = s6 - sx if s6.size == sx.size else np.zeros(0)
            diff = diff[np.isfinite(diff)]
            iv = list(np.percentile(diff, (2.5, 97.5))) if diff.size >= 2 else [None, None]
            out["differences"][f"kaplan_6N - {conv}"] = {"difference": d, "interval": iv}
    return out


def paragraph(*sweep_dirs: str | Path) -> str:
    """Markdown: the sweep(s), approach 2 and 1 exponents per convention, the 6N-vs-counted
    difference, the published values beside them, and what this scale can and cannot say.
    Several folders (one IsoFLOP design each) are read as one sweep."""
    folders = []
    for d in sweep_dirs:
        sweep = Path(d)
        folders.append((sweep, json.loads((sweep / "fits.json").read_text()),
                        json.loads((sweep / "sweep.json").read_text())))
    co = _merge(folders)
    sweep, fits, meta = folders[0]
    tables = [read_table(f / "summary.csv") for f, _, _ in folders]
    s = {k: np.concatenate([np.asarray(t[k]) for t in tables]) for k in tables[0]
         if all(k in t for t in tables)}
    iso = kinds(s) == "isoflop"
    plan = meta.get("plan", {})
    prov = fits.get("provenance", {})
    N = col(s, "N")[iso]
    head = (col(s, "C_kaplan_6N_head") - col(s, "C_kaplan_6N"))[iso] / col(s, "C_full_model")[iso]
    by_design: dict[str, set] = {}
    for _, _, m in folders:
        for r in m.get("runs", []):
            if r.get("budget"):
                by_design.setdefault(r["budget_convention"], set()).add(r["budget"])
    spans = "; ".join(f"{c}: {min(b):.3g} to {max(b):.3g} FLOPs ({len(b)} budgets)"
                      for c, b in by_design.items())
    elapsed = np.nansum(col(s, "elapsed_s")[iso])
    vocab = plan.get("bpe_vocab") or "256 (bytes)"
    commands = "; ".join(f"`{f.get('provenance', {}).get('command', 'sixn scale --isoflop')}`"
                         for _, f, _ in folders)
    where = ", ".join(f"`{_rel(p)}/`" for p, _, _ in folders)
    out = [f"**Compute-optimal size on the CPU, IsoFLOP profiles** ({commands}; {where}; "
           f"{prov.get('device', 'CPU')}, {prov.get('date', '')[:10]}): "
           f"{int(iso.sum())} runs, each trained with its own warm-up and cosine schedule to end "
           f"at its budget; budgets under {spans}; non-embedding N from {N.min():,.0f} "
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
    ratio = max(max(b) / min(b) for b in by_design.values())
    out.append(_reading(co, N, ratio))
    return "\n".join(out)


def _reading(co: dict, N: np.ndarray, span: float) -> str:
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
                f"{N.min():.2g} to {N.max():.2g} non-embedding parameters, each design's budgets "
                f"span {span:.3g}x or less, there is one seed and one learning-rate "
                "rule per size, and the intervals cover the noise of the final losses, not the "
                "parabola's misfit of an asymmetric profile.")
    return " ".join(said)
