"""Where the tests run: HAS_CUDA and DEVICE, defined once (conftest.py and the test files import them)."""

import torch

import sixn  # noqa: F401  (without a GPU, chooses the Triton interpreter before triton is imported)

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
