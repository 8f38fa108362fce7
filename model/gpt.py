"""A decoder-only Transformer: Kaplan et al.'s GPT by default, and the variants of model.config.

Pre-norm blocks (LayerNorm or RMSNorm), a learned position embedding, rotary embeddings (RoPE) or no
position signal, causal self-attention with n_kv_head key/value heads (grouped-query attention;
each key/value head serves n_head / n_kv_head consecutive query heads) and an optional sliding
window, a tanh-GELU MLP or a gated one (SwiGLU, GeGLU: three matrices), a mixture of experts, and an
LM head tied to the token embedding or untied. Three backends:

- "torch":  attention as explicit matmuls over the full T x T square, masked (causal, and by the
            window), so every product is visible to torch.utils.flop_counter.FlopCounterMode (which
            counts CPU scaled_dot_product_attention as zero FLOPs); the reference every kernel is
            checked against. Grouped heads are multiplied as (B, H_kv, G T, D) batches: K and V are
            never repeated.
- "sdpa":   torch.nn.functional.scaled_dot_product_attention, PyTorch's own fused attention (the
            speed baseline in benchmarks).
- "triton": sixn's Triton kernels (kernels.attention; kernels.mlp.linear_gelu or kernels.swiglu for
            the MLP up-projection); the other matmuls stay on cuBLAS / PyTorch.

Mixture of experts: a softmax router (no bias) picks top_k experts per token and their weights are
renormalised over the top_k (Mixtral's rule); each expert runs on the tokens routed to it (a loop
over experts, no capacity limit, no token dropped), so the executed FLOPs are top_k expert MLPs per
token whatever the routing. Routing depends on data: MoE models run on real tensors, not on the
meta device. Experts always run on PyTorch matmuls.

Activation recompute (config.recompute): "full" checkpoints every block, "selective" the attention
core (QK^T, softmax, PV); backward re-runs them whole (torch.utils.checkpoint, non-reentrant,
no early stop).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from sixn.kernels.backends import attention_op, gated_up_op, mlp_up_op

from .config import GPTConfig


def rope_tables(T: int, head_dim: int, theta: float, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (T, head_dim), as element-wise outer products."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) of x (B, H, T, D) by the angles of each position."""
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos + rot * sin


def recomputed(fn, *args):
    """fn(*args) with its activations dropped and fn re-run whole in backward (no early stop, so
    the recompute executes every product of the forward, as the FLOP accounting counts it)."""
    with set_checkpoint_early_stop(False):
        return checkpoint(fn, *args, use_reentrant=False)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, cfg.d_attn + 2 * cfg.d_kv, bias=cfg.has_bias("qkv"))
        self.proj = nn.Linear(cfg.d_attn, cfg.d_model, bias=cfg.has_bias("proj"))
        self.attend = attention_op(cfg.backend)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        B, T, _ = x.shape
        c = self.cfg
        H, Hk, Dh = c.n_head, c.kv_heads, c.head_dim
        q, k, v = self.qkv(x).split((c.d_attn, c.d_kv, c.d_kv), dim=2)
        q = q.view(B, T, H, Dh).transpose(1, 2)                  # (B, H, T, Dh)
        k = k.view(B, T, Hk, Dh).transpose(1, 2)                 # (B, H_kv, T, Dh)
        v = v.view(B, T, Hk, Dh).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if c.recompute == "selective":                           # recompute the core in backward
            y = recomputed(self.core, q, k, v)
        else:
            y = self.core(q, k, v)                               # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, c.d_attn)
        return self.proj(y)

    def core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(q, k, v, causal=True, window=self.cfg.window)


class MLP(nn.Module):
    """gelu: proj(gelu(fc x)); gated: proj(act(gate x) * up x), act silu (swiglu) or gelu (geglu)."""

    def __init__(self, cfg: GPTConfig, width: int, backend: str | None = None):
        super().__init__()
        self.cfg = cfg
        backend = cfg.backend if backend is None else backend
        bias = cfg.has_bias("mlp")
        if cfg.gated:
            self.gate = nn.Linear(cfg.d_model, width, bias=bias)
            self.up = nn.Linear(cfg.d_model, width, bias=bias)
            self.gated_up = gated_up_op(backend, cfg.mlp)
        else:
            self.fc = nn.Linear(cfg.d_model, width, bias=bias)
            self.act_up = mlp_up_op(backend)
        self.proj = nn.Linear(width, cfg.d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.gated:
            h = self.gated_up(x, self.gate.weight, self.up.weight, self.gate.bias, self.up.bias)
        else:
            h = self.act_up(x, self.fc.weight, self.fc.bias)
        return self.proj(h)


class MoE(nn.Module):
    """Routed experts (top_k of n_expert per token) plus shared experts, on PyTorch matmuls."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.router = nn.Linear(cfg.d_model, cfg.n_expert, bias=False)
        self.experts = nn.ModuleList(MLP(cfg, cfg.expert_width, "torch") for _ in range(cfg.n_expert))
        self.shared = nn.ModuleList(MLP(cfg, cfg.expert_width, "torch")
                                    for _ in range(cfg.n_shared_expert))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            raise ValueError("a mixture of experts routes on data: run it on real tensors (cpu or "
                             "cuda), not on the meta device")
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(x).float(), dim=-1)
        top_w, top_i = torch.topk(probs, self.cfg.top_k, dim=-1)  # (M, k)
        top_w = (top_w / top_w.sum(dim=-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = torch.where(top_i == e)
            if rows.numel() == 0:
                continue
            out = out.index_add(0, rows, expert(x[rows]) * top_w[rows, slot, None])
        for expert in self.shared:
            out = out + expert(x)
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = MoE(cfg) if cfg.moe and layer >= cfg.n_dense_layer else MLP(cfg, cfg.d_ff)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.ln_eps)
    return nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.has_bias("norm"))


# Which accounting row (model.flops.rows) each parameter belongs to, by name pattern.
def param_component(name: str, p: torch.Tensor, cfg: GPTConfig | None = None) -> str:
    if name in ("wte.weight", "wpe.weight"):
        return "embed"
    if name == "head.weight":
        return "de-embed"
    if ".ln" in name or name.startswith("ln_f"):
        return "rmsnorms" if cfg is not None and cfg.norm == "rmsnorm" else "layernorms"
    if name.endswith(".bias"):
        return "biases"
    if ".attn.qkv" in name:
        return "attention: QKV"
    if ".attn.proj" in name:
        return "attention: project"
    if ".mlp.router" in name:
        return "router"
    if ".mlp.experts." in name:
        return "feedforward: experts"
    if ".mlp.shared." in name:
        return "feedforward: shared experts"
    if ".mlp." in name:
        return "feedforward"
    raise KeyError(f"parameter {name!r} has no accounting row")


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.n_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.pos == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.head = None if cfg.tie_head else nn.Linear(cfg.d_model, cfg.n_vocab, bias=False)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def param_components(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, p in self.named_parameters():
            c = param_component(name, p, self.cfg)
            out[c] = out.get(c, 0) + p.numel()
        return out

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> logits (B, T, n_vocab) and, with targets, the mean loss."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq_len), got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx={self.cfg.n_ctx}")
        x = self.wte(idx)                                       # (B, T, d_model)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        rope = None
        if self.cfg.pos == "rope":
            rope = rope_tables(T, self.cfg.head_dim, self.cfg.rope_theta, idx.device, x.dtype)
        for block in self.blocks:
            if self.cfg.recompute == "full":                    # recompute each block in backward
                x = recomputed(block, x, rope)
            else:
                x = block(x, rope)
        x = self.ln_f(x)
        w = self.wte.weight if self.head is None else self.head.weight
        logits = F.linear(x, w)                                 # (B, T, n_vocab)
        if targets is None:
            return logits, None
        # under autocast cross_entropy already runs in fp32; no explicit upcast copy of the logits
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
