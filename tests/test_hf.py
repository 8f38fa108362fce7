"""sixn's counts against an independent implementation: Hugging Face transformers' GPT2, Llama,
Mistral, Qwen2 and Mixtral built from small configs on the CPU, counted by FlopCounterMode over one
training step, against sixn's count of the same config.json (`--hf-config`)."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sixn.bench.cli import main
from sixn.bench.counters import count_step  # registers the grouped-GEMM FLOP formula
from sixn.model.flops import executed, param_counts
from sixn.model.hf import HFConfigError, config_from_hf

transformers = pytest.importorskip("transformers")

B, T = 2, 12
SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, vocab_size=64)
CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32,
                                            vocab_size=64),
    "llama": lambda: transformers.LlamaConfig(**SMALL, attention_bias=True),
    "mistral": lambda: transformers.MistralConfig(**SMALL, sliding_window=5),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL, tie_word_embeddings=True),
    "mixtral": lambda: transformers.MixtralConfig(**SMALL, num_local_experts=4,
                                                  num_experts_per_tok=2, sliding_window=None),
}


def _hf_step(hf_cfg, experts="eager"):
    """(FlopCounterMode counts of one training step, parameter count) of the HF model."""
    torch.manual_seed(0)
    kw = {"attn_implementation": "eager"}
    if hf_cfg.model_type == "mixtral":
        kw["experts_implementation"] = experts
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, **kw)
    ids = torch.randint(0, hf_cfg.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    with FlopCounterMode(display=False) as fc:
        model(input_ids=ids, labels=ids).loss.backward()
    return fc, sum(p.numel() for p in model.parameters())


def _rotary(fc) -> int:
    """FLOPs FlopCounterMode credits to a rotary-embedding module: some transformers versions
    compute the RoPE angle table as a (D/2 x 1) @ (1 x T) matmul per sequence, which sixn counts
    element-wise (its rope row); this one (5.x) does not."""
    return sum(sum(d.values()) for k, d in fc.get_flop_counts().items()
               if k.endswith("rotary_emb") and k.count(".") == 2)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_hf_training_step_equals_sixn(family, tmp_path):
    hf_cfg = CONFIGS[family]()
    path = tmp_path / family / "config.json"
    path.parent.mkdir()
    hf_cfg.to_json_file(str(path))
    cfg = config_from_hf(path)
    assert cfg.name == family
    fc, n_params = _hf_step(hf_cfg)
    assert n_params == param_counts(cfg).total
    rot = _rotary(fc)
    assert rot in (0, B * T * cfg.head_dim)  # none, or 2 B (D/2) T
    ex = executed(cfg, B, T)
    assert fc.get_total_flops() - rot == ex.matmul_total
    # and sixn's own torch model of the same config, counted the same way
    assert count_step(cfg, B, T, counter="dispatch").total == ex.matmul_total


def test_hf_mixtral_grouped_mm_counted(tmp_path):
    """transformers' grouped-GEMM experts (torch._grouped_mm) count 0 FLOPs in FlopCounterMode
    without a formula; with sixn's registered formula they count the same as the eager loop."""
    hf_cfg = CONFIGS["mixtral"]()
    eager, _ = _hf_step(hf_cfg, "eager")
    try:
        grouped, _ = _hf_step(hf_cfg, "grouped_mm")
    except (RuntimeError, ValueError, NotImplementedError) as e:  # no grouped GEMM on this build
        pytest.skip(f"grouped_mm experts not runnable here: {e}")
    counts = grouped.get_flop_counts()["Global"]
    assert any("grouped_mm" in str(op) for op in counts)
    assert grouped.get_total_flops() == eager.get_total_flops()


def test_hf_cli_json_params(tmp_path, capsys):
    path = tmp_path / "config.json"
    CONFIGS["mixtral"]().to_json_file(str(path))
    assert main(["flops", "--hf-config", str(path), "--seq-len", "16", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["seq_len"] == 16 and d["config"]["n_expert"] == 4
    assert d["params"]["total"] == param_counts(config_from_hf(path)).total
    assert d["params"]["active"] < d["params"]["total"]
    assert main(["flops", "--hf-config", str(path), "--measure", "dispatch", "--seq-len", "8",
                 "--out", str(tmp_path / "m"), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["measured_total"] == m["analytic_executed_total"]


@pytest.mark.parametrize("content, msg", [
    ('{"model_type": "bert", "hidden_size": 8}', "model_type 'bert' is not supported"),
    ('{"model_type": "deepseek_v3", "kv_lora_rank": 512}', "multi-head latent attention"),
    ('{"model_type": "llama", "hidden_size": 8', "not valid JSON"),
    ('[1, 2]', "must hold a JSON object"),
    ('{"model_type": "llama", "hidden_size": 32}', "no 'num_attention_heads'"),
    ('{"model_type": "gpt2", "n_layer": "2", "n_embd": 8, "n_head": 2}', "'n_layer' must be int"),
])
def test_hf_cli_errors_exit_2(tmp_path, capsys, content, msg):
    path = tmp_path / "config.json"
    path.write_text(content)
    assert main(["flops", "--hf-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sixn flops: error: --hf-config") and msg in err[0]
    with pytest.raises(HFConfigError):
        config_from_hf(path)


def test_hf_missing_file(capsys, tmp_path):
    assert main(["flops", "--hf-config", str(tmp_path / "nope.json")]) == 2
    assert f"{tmp_path / 'nope.json'}: no such file or folder" in capsys.readouterr().err
