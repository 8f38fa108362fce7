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
