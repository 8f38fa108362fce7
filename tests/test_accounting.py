"""The accounting module against Kaplan's published figures and against the model itself."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sixn.model import GPT, GPTConfig, accounting, executed, flops_per_token, get_preset, param_counts
from sixn.model.flops import (AttentionExec, ExecSpec, GemmExec, attention_overheads, padded,
                         visited_block_pairs)
from sixn.model.presets import LADDER, PRESETS


def test_gpt2_small_kaplan_figures():
    acc = accounting(get_preset("gpt2-small"))
    assert acc.params.nonembedding == 84_934_656
    assert acc.training_per_token["kaplan_6N"] == 509_607_936
    # Kaplan's forward context term 2 * n_layer * n_ctx * d_attn
    assert acc.C_forward - 2 * acc.N == 2 * 12 * 1024 * 768 == 18_874_368
    assert acc.training_per_token["kaplan_6N_context"] == 509_607_936 + 3 * 18_874_368
    # nanoGPT / PaLM: 6 * (params - wpe) + 12 L H Q T
    assert acc.params.total == 124_439_808  # GPT-2 small as released (tied head)
    assert acc.training_per_token["palm"] == 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 12 * 64 * 1024
    # The head is real compute that 6N leaves out: 6N is about 0.6 of the palm count
    assert 0.58 < acc.training_per_token["kaplan_6N"] / acc.training_per_token["palm"] < 0.62


def test_kaplan_table_rows_match_formulas():
    cfg = GPTConfig(n_layer=3, d_model=48, d_attn=32, d_ff=80, n_head=4, n_ctx=20, n_vocab=97)
    acc = accounting(cfg)
    L, d, a, f, T, V = 3, 48, 32, 80, 20, 97
    k = {r.component: r.kaplan_forward_flops for r in acc.rows if r.kaplan_forward_flops is not None}
    assert k == {"embed": 4 * d, "attention: QKV": 2 * L * d * 3 * a, "attention: mask": 2 * L * T * a,
                 "attention: project": 2 * L * a * d, "feedforward": 2 * L * 2 * d * f,
                 "de-embed": 2 * d * V}
    assert acc.N == 2 * d * L * (2 * a + f)
    assert acc.C_forward == 2 * acc.N + 2 * L * T * a
    # full_model: every row forward + backward, backward = 2x forward
    assert acc.training_per_token["full_model"] == 3 * acc.forward_per_token["full_model"]
    assert acc.training_per_token["full_model"] == sum(r.forward_flops + r.backward_flops for r in acc.rows)


def _random_config(rng: random.Random, tie: bool) -> GPTConfig:
    n_head = rng.choice([1, 2, 3, 4])
    head_dim = rng.choice([8, 16, 24])
    return GPTConfig(n_layer=rng.randint(1, 3), d_model=rng.choice([16, 24, 40, 64]),
                     d_attn=n_head * head_dim, d_ff=rng.choice([32, 56, 96]), n_head=n_head,
                     n_ctx=rng.choice([8, 13, 32]), n_vocab=rng.choice([50, 97, 256]),
                     tie_head=tie, bias=rng.random() < 0.7)


@pytest.mark.parametrize("seed", range(12))
def test_param_counts_match_model_by_component(seed):
    rng = random.Random(seed)
    cfg = _random_config(rng, tie=seed % 2 == 0)
    model = GPT(cfg)
    counts = param_counts(cfg)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.by_component == model.param_components()
    assert counts.total == counts.nonembedding + counts.embedding + counts.other


def _matmul_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


@pytest.mark.parametrize("seed", range(6))
def test_flop_counter_equals_accounting_matmul_rows(seed):
    """FlopCounterMode sees every matmul of the torch backend (attention is explicit matmuls there,
    because it counts CPU scaled_dot_product_attention as 0), and the counts are exact."""
    rng = random.Random(100 + seed)
    cfg = _random_config(rng, tie=seed % 2 == 1)
    B = rng.randint(1, 3)
    T = rng.randint(1, cfg.n_ctx)
    torch.manual_seed(seed)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.n_vocab, (B, T))
    ex = executed(cfg, B, T)  # default spec: the torch reference
    fwd_matmul = sum(v for g, v in ex.forward.items() if g != "other")
    with torch.no_grad():
        assert _matmul_flops(lambda: model(idx)) == fwd_matmul

    def step():
        _, loss = model(idx, idx)
        loss.backward()
    assert _matmul_flops(step) == ex.matmul_total == 3 * fwd_matmul


def test_visited_block_pairs():
    # T divisible: n (n + 1) / 2 tiles causal, n^2 not
    assert visited_block_pairs(256, 64, 64, causal=True) == 10
    assert visited_block_pairs(256, 64, 64, causal=False) == 16
    # brute force against the rule for ragged T and unequal blocks
    for T, bm, bn in [(1, 16, 16), (17, 16, 16), (113, 32, 16), (257, 16, 64), (40, 64, 32)]:
        brute = sum(1 for i in range(-(-T // bm)) for j in range(-(-T // bn))
                    if any(jj <= ii for ii in range(i * bm, min((i + 1) * bm, T))
                           for jj in range(j * bn, min((j + 1) * bn, T))))
        assert visited_block_pairs(T, bm, bn, causal=True) == brute


def test_executed_blocked_attention_and_overheads():
    cfg = get_preset("tiny")
    spec = ExecSpec(attention=AttentionExec(blocked=True, fwd_blocks=(16, 16), fwd_dots=2,
                                            bwd_passes=((16, 16, 4), (16, 16, 3))),
                    mlp_up=GemmExec((16, 16, 16), (16, 16, 16), (16, 16, 16), recompute=True),
                    name="test")
    ex = executed(cfg, batch=2, seq_len=64, spec=spec)
    tiles = visited_block_pairs(64, 16, 16, True)
    # n_layer * batch * n_head * tiles * dots * (2 * bm * bn * block_d)
    assert ex.forward["attention"] == 2 * 2 * 4 * tiles * 2 * (2 * 16 * 16 * 16)
    assert ex.backward["attention"] == 2 * 2 * 4 * tiles * 7 * (2 * 16 * 16 * 16)
    ov = attention_overheads(cfg, spec, batch=2, seq_len=64)
    # 4 blocks per side: 10 tiles of 16 vs the exact triangle 64 * 65 / 2 scores
    assert ov["causal_block_overhead"] == pytest.approx(10 * 256 / (64 * 65 / 2) - 1)
    assert ov["backward_recompute_overhead"] == pytest.approx(7 / 4 - 1)
    # padding of a GEMM tile
    assert GemmExec(fwd_tiles=(32, 32, 32)).forward_flops(17, 40, 8) == 2 * 32 * 64 * 32
    assert padded(17, 16) == 32
    per_token = flops_per_token(cfg, "executed", spec=spec)
    assert per_token == executed(cfg, 1, 64, spec).total / 64


def test_presets_ladder_spans_kaplan_range():
    ns = [accounting(PRESETS[n]).N for n in LADDER]
    assert ns == sorted(ns)
    assert ns[0] < 2e4 and ns[-1] > 1e9
    for n in LADDER:
        c = PRESETS[n]
        assert 16 <= c.d_model / c.n_layer <= 64
        assert c.d_attn == c.d_model and c.d_ff == 4 * c.d_model
    assert accounting(get_preset("gpt2-medium")).N == 12 * 24 * 1024 ** 2


@pytest.mark.parametrize("bad, msg", [
    (dict(d_attn=100, n_head=3), "divisible by n_head"),
    (dict(n_layer=0), "n_layer must be positive"),
    (dict(d_model=-4), "d_model must be positive"),
    (dict(n_ctx=2.5), "n_ctx must be an int"),
    (dict(backend="jax"), "backend must be one of"),
])
def test_config_validation(bad, msg):
    with pytest.raises(ValueError, match=msg):
        GPTConfig(**bad)


def test_unknown_preset_and_convention():
    with pytest.raises(ValueError, match="known presets"):
        get_preset("gpt5")
    with pytest.raises(ValueError, match="known:"):
        flops_per_token(get_preset("tiny"), "chinchilla")
    with pytest.raises(ValueError, match="seq_len"):
        accounting(get_preset("tiny"), seq_len=65)
