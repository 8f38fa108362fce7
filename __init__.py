"""sixn: measured FLOPs, GPU throughput and compute-calibrated scaling laws for Transformers.

Subpackages (imports flow one way, top to bottom; see ARCHITECTURE.md):
    sixn.model     config, presets, the FLOP/parameter accounting (model/flops.py), the GPT
    sixn.kernels   Triton kernels as torch.library custom ops, and what each backend executes
    sixn.bench     results I/O, timing, roofs, training-step measurement, counters, and the CLI
    sixn.scaling   data, training runs, sweeps, scaling-law fits and plots
"""

__version__ = "0.1.0"

# Choose the Triton interpreter before anything imports triton (no CUDA device: CPU interpreter).
from sixn.kernels import runtime as _runtime  # noqa: E402,F401
