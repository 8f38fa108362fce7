"""A GPT-style decoder in Kaplan et al.'s parameterisation (see model.config).

Pre-LayerNorm blocks, learned position embedding, tanh-GELU MLP, causal self-attention and an
LM head tied to the token embedding or untied (config.tie_head). Three backends:

- "torch":  attention as explicit matmuls + mask + softmax, so every product is visible to
            torch.utils.flop_counter.FlopCounterMode (which counts CPU scaled_dot_product_attention
            as zero FLOPs); the reference every kernel is checked against.
- "sdpa":   torch.nn.functional.scaled_dot_product_attention, PyTorch's own fused attention (the
            speed baseline in benchmarks).
- "triton": sixn's Triton kernels (kernels.attention, kernels.linear_gelu) for attention and the MLP
            up-projection; the other matmuls stay on cuBLAS / PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from sixn.kernels.backends import attention_op, mlp_up_op

from .config import GPTConfig


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_attn, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_attn, cfg.d_model, bias=cfg.bias)
        self.attend = attention_op(cfg.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, Dh = self.cfg.n_head, self.cfg.head_dim
        q, k, v = self.qkv(x).split(self.cfg.d_attn, dim=2)     # each (B, T, d_attn)
        q, k, v = (t.view(B, T, H, Dh).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        y = self.attend(q, k, v, causal=True)                   # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, self.cfg.d_attn)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.up = mlp_up_op(cfg.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.up(x, self.fc.weight, self.fc.bias))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


# Which accounting row (model.flops.rows) each parameter belongs to, by name pattern.
def param_component(name: str, p: torch.Tensor) -> str:
    if name in ("wte.weight", "wpe.weight"):
        return "embed"
    if name == "head.weight":
        return "de-embed"
    if ".ln" in name or name.startswith("ln_f"):
        return "layernorms"
    if name.endswith(".bias"):
        return "biases"
    if ".attn.qkv" in name:
        return "attention: QKV"
    if ".attn.proj" in name:
        return "attention: project"
    if ".mlp." in name:
        return "feedforward"
    raise KeyError(f"parameter {name!r} has no accounting row")


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.n_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps, bias=cfg.bias)
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
            c = param_component(name, p)
            out[c] = out.get(c, 0) + p.numel()
        return out

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> logits (B, T, n_vocab) and, with targets, the mean loss."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq_len), got shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence length {T} exceeds n_ctx={self.cfg.n_ctx}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)                       # (B, T, d_model)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        w = self.wte.weight if self.head is None else self.head.weight
        logits = F.linear(x, w)                                 # (B, T, n_vocab)
        if targets is None:
            return logits, None
        # under autocast cross_entropy already runs in fp32; no explicit upcast copy of the logits
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss
