"""GPT-style decoder in Kaplan et al.'s parameterisation, and sixn's FLOP/parameter accounting."""

from .config import BACKENDS, GPTConfig
from .flops import (CONVENTIONS, PF_DAY, AttentionExec, ExecSpec, GemmExec, accounting, executed,
                    flops_per_token, param_counts)
from .presets import LADDER, PRESETS, get_preset

__all__ = [
    "BACKENDS", "CONVENTIONS", "GPT", "GPTConfig", "LADDER", "PF_DAY", "PRESETS", "AttentionExec",
    "ExecSpec", "GemmExec", "accounting", "executed", "flops_per_token", "get_preset",
    "param_counts",
]


def __getattr__(name: str):
    # model.gpt runs on sixn.kernels, whose FLOP formulas come from model.flops: importing the GPT
    # lazily keeps `import sixn.model.flops` (what the kernels need) free of the kernels themselves.
    if name == "GPT":
        from .gpt import GPT
        return GPT
    raise AttributeError(f"module 'sixn.model' has no attribute {name!r}")
