"""Micro-benchmarks of CPU-side code with pytest-benchmark: FLOP accounting, executed counts, a
scaling fit and batch loading. CI runs them once each as tests (--benchmark-disable in addopts);
`python -m pytest tests/test_bench_micro.py --benchmark-enable` times them."""

import numpy as np
import pytest
import torch

from sixn.model.flops import ExecSpec, accounting, executed
from sixn.model.presets import PRESETS


def test_accounting_all_presets(benchmark):
    accs = benchmark(lambda: [accounting(cfg) for cfg in PRESETS.values()])
    assert len(accs) == len(PRESETS)
    for acc in accs:
        t = acc.training_per_token
        assert t["kaplan_6N"] == 6 * acc.N
        assert t["kaplan_6N"] < t["kaplan_6N_context"]
        # PaLM's estimate counts the parameters a token runs: for MoE the active ones
        assert t["kaplan_6N_active"] < t["palm"]


def test_executed_gpt2_small(benchmark):
    cfg = PRESETS["gpt2-small"]
    ex = benchmark(executed, cfg, 8, 1024, ExecSpec())
    one = executed(cfg, 1, 1024, ExecSpec())
    assert ex.total == 8 * one.total               # per-sequence work scales with the batch
    assert 0 < ex.matmul_total < ex.total
    # the torch reference runs the full T x T square: more than the model count's causal triangle
    assert ex.total / (8 * 1024) > accounting(cfg).training_per_token["full_model"]


def test_scaling_fit(benchmark):
    from sixn.scaling.kaplan import fit_L_N
    rng = np.random.default_rng(0)
    N = np.logspace(4, 8, 8)
    L = (8.8e13 / N) ** 0.076 * np.exp(rng.normal(0, 0.002, N.size))
    fit = benchmark(fit_L_N, N, L, n_boot=20)
    assert fit.params["alpha_N"] == pytest.approx(0.076, rel=0.1)


def test_data_batch(benchmark):
    data = pytest.importorskip("sixn.scaling.data")
    tokens = (np.arange(20_000) % 251).astype(np.uint16)
    corpus = data.Corpus(train=tokens, val=tokens[:2000], vocab_size=256, fingerprint="0" * 16,
                         description="synthetic")
    gen = torch.Generator().manual_seed(0)
    x, y = benchmark(corpus.get_batch, "train", 16, 128, gen)
    assert x.shape == y.shape == (16, 128) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y, (x + 1) % 251)
