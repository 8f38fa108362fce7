"""A GPTConfig from a Hugging Face `config.json` on disk (no network, no transformers import).

Families whose architecture maps exactly onto model.config's fields (every parameter and every
matmul of the Hugging Face model has its row in model.flops):

    gpt2      learned positions, LayerNorm with biases, tanh-GELU MLP, tied head by default
    llama     RoPE, RMSNorm, SwiGLU (GeGLU for a GELU hidden_act), GQA, attention_bias / mlp_bias
    mistral   llama + sliding_window
    qwen2     llama + QKV biases (no output/MLP biases); the sliding window only when it covers
              every layer
    mixtral   mistral with num_local_experts experts, num_experts_per_tok per token

Anything else is refused with the model_type or field named: other families, multi-head latent
attention (kv_lora_rank / q_lora_rank), per-layer attention types (layer_types mixing full and
sliding attention), Qwen2 sliding windows on some layers only, activations other than those above.
Fields that change no count (rope scaling, dropout, initialiser ranges, token ids) are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import GPTConfig

SUPPORTED = ("gpt2", "llama", "mistral", "qwen2", "mixtral")
_MLA_FIELDS = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim")
_GELU = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


class HFConfigError(ValueError):
    """A config.json that cannot be read or mapped exactly; the message says what and why."""


def load_hf_config(path: str | Path) -> dict:
    """The JSON object in `path` (a config.json, or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        text = p.read_text()
    except OSError as e:
        raise HFConfigError(f"cannot read {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise HFConfigError(f"{p} is not UTF-8 text (byte {e.start}): not a config.json") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise HFConfigError(f"{p} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise HFConfigError(f"{p} must hold a JSON object, got {type(d).__name__}")
    return d


def _get(d: dict, key: str, kind=int, default=..., where: str = ""):
    if key not in d or d[key] is None:
        if default is ...:
            raise HFConfigError(f"{where}config.json has no {key!r}, which a {d.get('model_type')} "
                                f"config needs")
        return default
    v = d[key]
    ok = (isinstance(v, bool) if kind is bool else
          isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
          isinstance(v, kind) and not isinstance(v, bool))
    if not ok:
        raise HFConfigError(f"config.json field {key!r} must be {kind.__name__}, got {v!r}")
    return v


def _rope_theta(d: dict) -> float:
    rp = d.get("rope_parameters")
    if isinstance(rp, dict) and rp.get("rope_theta") is not None:
        return float(rp["rope_theta"])
    return float(_get(d, "rope_theta", float, 10000.0))


def _check_layer_types(d: dict, window: int | None) -> None:
    lt = d.get("layer_types")
    if lt is None:
        return
    kinds = set(lt) if isinstance(lt, list) else {lt}
    want = {"sliding_attention"} if window is not None else {"full_attention"}
    if kinds != want and not (window is None and kinds == {"full_attention"}):
        raise HFConfigError(f"config.json field 'layer_types' mixes attention kinds {sorted(map(str, kinds))}; "
                            f"sixn supports one kind for every layer (all full, or all sliding)")


def _gpt2(d: dict, name: str) -> GPTConfig:
    act = d.get("activation_function", "gelu_new")
    if act not in _GELU:
        raise HFConfigError(f"gpt2 activation_function {act!r} is not supported; supported: "
                            f"{', '.join(_GELU)}")
    n_embd, n_head = _get(d, "n_embd"), _get(d, "n_head")
    return GPTConfig(n_layer=_get(d, "n_layer"), d_model=n_embd, d_attn=n_embd,
                     d_ff=_get(d, "n_inner", int, 4 * n_embd), n_head=n_head,
                     n_ctx=_get(d, "n_positions"), n_vocab=_get(d, "vocab_size"),
                     tie_head=_get(d, "tie_word_embeddings", bool, True),
                     ln_eps=float(_get(d, "layer_norm_epsilon", float, 1e-5)), name=name)


def _llama_like(d: dict, name: str) -> GPTConfig:
    mt = d["model_type"]
    hidden, heads = _get(d, "hidden_size"), _get(d, "num_attention_heads")
    head_dim = _get(d, "head_dim", int, None) or hidden // heads
    act = d.get("hidden_act", "silu")
    if act == "silu":
        mlp = "swiglu"
    elif act in _GELU:
        mlp = "geglu"
    else:
        raise HFConfigError(f"{mt} hidden_act {act!r} is not supported; supported: silu (SwiGLU), "
                            f"{', '.join(_GELU)} (GeGLU)")
    window = None
    if mt in ("mistral", "mixtral"):
        window = _get(d, "sliding_window", int, None)
    if mt == "qwen2" and _get(d, "use_sliding_window", bool, False):
        layers = _get(d, "num_hidden_layers")
        if _get(d, "max_window_layers", int, layers) != 0:
            raise HFConfigError("qwen2 use_sliding_window with max_window_layers > 0 windows only some "
                                "layers; sixn supports a window on every layer (max_window_layers 0) "
                                "or none")
        window = _get(d, "sliding_window")
    _check_layer_types(d, window)
    attn_bias = _get(d, "attention_bias", bool, False)
    kw = dict(qkv_bias=attn_bias, proj_bias=attn_bias, mlp_bias=_get(d, "mlp_bias", bool, False))
    if mt == "qwen2":
        kw = dict(qkv_bias=True, proj_bias=False, mlp_bias=False)
    if mt == "mixtral":
        kw.update(n_expert=_get(d, "num_local_experts"), top_k=_get(d, "num_experts_per_tok"))
    return GPTConfig(
        n_layer=_get(d, "num_hidden_layers"), d_model=hidden, d_attn=heads * head_dim,
        d_ff=_get(d, "intermediate_size"), n_head=heads,
        n_kv_head=_get(d, "num_key_value_heads", int, heads),
        n_ctx=_get(d, "max_position_embeddings"), n_vocab=_get(d, "vocab_size"),
        tie_head=_get(d, "tie_word_embeddings", bool, False), bias=False, mlp=mlp, norm="rmsnorm",
        pos="rope", ln_eps=float(_get(d, "rms_norm_eps", float, 1e-6)), rope_theta=_rope_theta(d),
        window=window, name=name, **kw)


def config_from_hf(source: str | Path | dict, name: str | None = None) -> GPTConfig:
    """The GPTConfig of a Hugging Face config (a path to config.json or its folder, or the dict)."""
    d = source if isinstance(source, dict) else load_hf_config(source)
    mt = d.get("model_type")
    if not isinstance(mt, str):
        raise HFConfigError("config.json has no 'model_type' string; supported model types: "
                            + ", ".join(SUPPORTED))
    for f in _MLA_FIELDS:
        if d.get(f) is not None:
            raise HFConfigError(f"config.json field {f!r}: multi-head latent attention is not "
                                f"supported (model_type {mt!r}); supported model types: "
                                + ", ".join(SUPPORTED))
    if mt not in SUPPORTED:
        raise HFConfigError(f"model_type {mt!r} is not supported; supported: {', '.join(SUPPORTED)}")
    if name is None:
        if isinstance(source, dict):
            name = mt
        else:
            p = Path(source).resolve()
            name = p.name if p.is_dir() else (p.parent.name if p.name == "config.json" else p.stem)
    try:
        return _gpt2(d, name) if mt == "gpt2" else _llama_like(d, name)
    except HFConfigError:
        raise
    except ValueError as e:
        raise HFConfigError(f"{mt} config.json maps to an invalid model: {e}") from None
