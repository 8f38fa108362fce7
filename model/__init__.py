"""GPT-style decoder in Kaplan et al.'s parameterisation, and sixn's FLOP/parameter accounting."""

from .config import BACKENDS, GPTConfig
from .flops import (CONVENTIONS, PF_DAY, AttentionExec, ExecSpec, GemmExec, accounting, executed,
                    flops_per_token, param_counts)
from .gpt import GPT, reference_attention
from .presets import LADDER, PRESETS, get_preset

__all__ = [
    "BACKENDS", "CONVENTIONS", "GPT", "GPTConfig", "LADDER", "PF_DAY", "PRESETS", "AttentionExec",
    "ExecSpec", "GemmExec", "accounting", "executed", "flops_per_token", "get_preset",
    "param_counts", "reference_attention",
]
