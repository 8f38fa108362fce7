"""Modern decoder variants (GQA/MQA, gated MLPs, RMSNorm, RoPE, MoE, sliding windows, recompute):
parameters against the instantiated model, executed FLOPs against FlopCounterMode, presets of real
models against their published totals."""

import random

import pytest
import torch

from sixn.bench.counters import CounterError, count_step
from sixn.kernels.backends import exec_spec
from sixn.model import GPTConfig, executed, get_preset
from sixn.model.config import MLPS, NORMS, POSITIONS
from sixn.model.flops import GROUPS, accounting, causal_pairs, param_counts, visited_block_pairs
from sixn.model.gpt import GPT


def random_variant(rng: random.Random, moe: bool | None = None) -> GPTConfig:
    n_kv = rng.choice([1, 2, 3])
    n_head = n_kv * rng.choice([1, 2])
    hd = rng.choice([4, 8])
    n_layer = rng.randint(1, 3)
    moe = rng.random() < 0.4 if moe is None else moe
    kw = {}
    if moe:
        E = rng.randint(2, 4)
        kw = dict(n_expert=E, top_k=rng.randint(1, E), n_shared_expert=rng.randint(0, 1),
                  d_expert=rng.choice([None, 12, 20]), n_dense_layer=rng.randint(0, n_layer - 1))
    n_ctx = rng.choice([8, 13, 24])
    return GPTConfig(
        n_layer=n_layer, d_model=rng.choice([16, 24]), d_attn=n_head * hd, n_head=n_head,
        n_kv_head=rng.choice([n_kv, None]) if n_kv == n_head else n_kv,
        d_ff=rng.choice([16, 40]), n_ctx=n_ctx, n_vocab=rng.choice([31, 64]),
        mlp=rng.choice(MLPS), norm=rng.choice(NORMS), pos=rng.choice(POSITIONS),
        bias=rng.random() < 0.5, qkv_bias=rng.choice([None, True, False]),
        proj_bias=rng.choice([None, True, False]), mlp_bias=rng.choice([None, True, False]),
        tie_head=rng.random() < 0.5, window=rng.choice([None, 1, 3, n_ctx // 2]),
        recompute=rng.choice(["none", "none", "selective", "full"]), **kw)


def _matmul_groups(ex):
    return {g: v for g, v in ex.by_group().items() if g != "other"}


@pytest.mark.parametrize("seed", range(24))
def test_params_equal_numel_by_component(seed):
    cfg = random_variant(random.Random(seed))
    with torch.device("meta"):
        model = GPT(cfg)
    pc = param_counts(cfg)
    assert model.param_components() == pc.by_component
    assert sum(p.numel() for p in model.parameters()) == pc.total
    # active parameters: the routed experts a token does not run are left out
    idle = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    idle = idle * (cfg.n_expert - cfg.top_k) // cfg.n_expert if cfg.moe else 0
    assert pc.active == pc.total - idle


@pytest.mark.parametrize("seed", range(24))
def test_dispatch_equals_executed_every_variant(seed):
    """FlopCounterMode over a training step of the torch reference (meta device; real CPU tensors
    where experts route on data) == model.flops.executed, by group, recompute included."""
    rng = random.Random(100 + seed)
    cfg = random_variant(rng, moe=seed % 3 == 0)
    B, T = rng.randint(1, 2), rng.randint(1, cfg.n_ctx)
    ex = executed(cfg, B, T, exec_spec(cfg, B, T, torch.float32, "cpu"))
    if cfg.recompute == "full":  # no attribution by module there: the step's total
        from torch.utils.flop_counter import FlopCounterMode
        from sixn.bench.counters import build_step
        _, step = build_step(cfg, B, T, "cpu" if cfg.moe else "meta", torch.float32)
        with FlopCounterMode(display=False) as fc:
            step()
        assert fc.get_total_flops() == ex.matmul_total
        with pytest.raises(CounterError, match="full recompute"):
            count_step(cfg, B, T, counter="dispatch")
        return
    sc = count_step(cfg, B, T, counter="dispatch")
    assert sc.device == ("cpu" if cfg.moe else "meta")
    assert {g: sc.by_group[g] for g in GROUPS if g != "other"} == _matmul_groups(ex)
    assert sc.total == ex.matmul_total


def test_moe_count_is_top_k_whatever_the_routing():
    """Two different routings (seeds) of the same MoE step execute the same FLOPs: top_k experts per
    token; and a token-level difference would show: top_k 1 vs 2 differ by one expert MLP per token."""
    cfg = GPTConfig(n_layer=1, d_model=16, d_attn=16, n_head=2, d_ff=24, n_ctx=16, n_vocab=32,
                    mlp="swiglu", n_expert=4, top_k=2, bias=False)
    a = count_step(cfg, 2, 16, counter="dispatch")
    b = count_step(cfg.replace(n_expert=4), 1, 16, counter="dispatch")
    one = count_step(cfg.replace(top_k=1), 2, 16, counter="dispatch")
    assert a.by_group["feedforward"] - one.by_group["feedforward"] == 3 * (2 * 32 * 16 * 24 * 3)
    assert a.total == executed(cfg, 2, 16).matmul_total and b.total == executed(cfg, 1, 16).matmul_total
    with pytest.raises(CounterError, match="meta device"):
        count_step(cfg, 1, 8, counter="dispatch", device="meta")


def test_recompute_adds_forward_to_hfu_only():
    cfg = get_preset("tiny")
    base = accounting(cfg, 64)
    full = accounting(cfg.replace(recompute="full"), 64, recompute="full")
    sel = accounting(cfg, 64, recompute="selective")
    assert full.training_per_token == base.training_per_token  # MFU never counts recompute
    assert base.hardware_per_token is None
    rows = {r.component: r.forward_flops for r in base.rows}
    assert sel.hardware_per_token - base.training_per_token["full_model"] == \
        rows["attention: mask"] + rows["softmax"]
    outside = rows["embed"] + rows["de-embed"] + rows["loss (cross-entropy)"] + 6 * cfg.d_model
    assert full.hardware_per_token - base.training_per_token["full_model"] == \
        sum(rows.values()) - outside
    ex0, ex1 = (executed(cfg, 1, 64, exec_spec(c, 1, 64, torch.float32, "cpu"))
                for c in (cfg, cfg.replace(recompute="full")))
    assert ex1.backward["qkv"] == ex0.backward["qkv"] + ex0.forward["qkv"]
    assert ex1.forward == ex0.forward


def test_window_pairs_and_tiles_by_enumeration():
    for T in (1, 7, 33):
        for w in (None, 1, 4, 16, 40):
            keep = [(i, j) for i in range(T) for j in range(T)
                    if j <= i and (w is None or i - j < w)]
            assert causal_pairs(T, w) == len(keep)
            for bm, bn in ((16, 8), (8, 16), (4, 4)):
                tiles = {(i // bm, j // bn) for i, j in keep}
                assert visited_block_pairs(T, bm, bn, True, w) == len(tiles)


def test_kaplan_default_unchanged():
    """Every new field at its default is Kaplan's GPT: same rows and counts as the explicit
    Kaplan choices, and the config dict gains keys only."""
    a = get_preset("gpt2-small")
    b = a.replace(n_kv_head=12, mlp="gelu", norm="layernorm", pos="learned", qkv_bias=True,
                  proj_bias=True, mlp_bias=True)
    assert accounting(a).rows == accounting(b).rows
    assert accounting(a).params.total == 124_439_808


@pytest.mark.parametrize("kw, msg", [
    (dict(n_kv_head=5), "must divide n_head"),
    (dict(mlp="relu"), "mlp must be one of"),
    (dict(norm="batchnorm"), "norm must be one of"),
    (dict(pos="alibi"), "pos must be one of"),
    (dict(n_expert=4, top_k=5), "top_k must be in"),
    (dict(top_k=2), "need experts"),
    (dict(n_expert=2, top_k=1, n_dense_layer=12), "at least one MoE block"),
    (dict(window=0), "window must be an int >= 1"),
    (dict(recompute="some"), "recompute must be one of"),
])
def test_invalid_combinations(kw, msg):
    with pytest.raises(ValueError, match=msg):
        get_preset("gpt2-small").replace(**kw)


def test_real_model_presets_match_published_totals():
    assert param_counts(get_preset("llama-3-8b")).total == 8_030_261_248
    assert param_counts(get_preset("llama-2-7b")).total == 6_738_415_616
    assert param_counts(get_preset("mistral-7b")).total == 7_241_732_096
    assert param_counts(get_preset("qwen2.5-7b")).total == 7_615_616_512
    assert param_counts(get_preset("llama-3-70b")).total == 70_553_706_496
    mx = param_counts(get_preset("mixtral-8x7b"))
    assert round(mx.total / 1e9, 1) == 46.7 and round(mx.active / 1e9, 1) == 12.9
    with torch.device("meta"):  # the model built from the preset has exactly that many
        assert sum(p.numel() for p in GPT(get_preset("llama-3-8b")).parameters()) == 8_030_261_248
