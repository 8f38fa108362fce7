import importlib
import os
import sys
from pathlib import Path

# `python -m pytest` puts the current folder (the checkout) first on sys.path, so that its
# kernels/, model/, bench/ ... folders would be importable as top-level packages and shadow
# installed ones of the same name (transformers probes a `kernels` package). sixn is imported
# as the installed package `sixn`, never from these folders: take the checkout off the path.
# (pytest adds only tests/ itself: --import-mode=importlib and pythonpath in pyproject.toml.)
_ROOT = Path(__file__).resolve().parent.parent


def _checkout_off_the_path() -> None:
    if any(Path(p or os.getcwd()).resolve() == _ROOT for p in sys.path):
        sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != _ROOT]
        importlib.invalidate_caches()


_checkout_off_the_path()

import pytest
import torch

from devices import DEVICE, HAS_CUDA


@pytest.fixture
def device() -> str:
    return DEVICE


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    """Tests never write into the committed results/ folder."""
    monkeypatch.setenv("SIXN_RESULTS", str(tmp_path / "results"))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """The CI machine's 2 cores are shared: OpenMP threads waiting on each other make tiny models'
    steps up to 100x slower. One torch thread keeps CPU runs short and stable."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
