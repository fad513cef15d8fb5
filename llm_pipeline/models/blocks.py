"""The one transformer block every family uses: norms -> MLP -> Block.

A `BlockConfig` picks the variant: GPT-2 (pre-norm, LayerNorm, GELU), modern (pre-norm,
RMSNorm, SwiGLU), BERT (post-norm, LayerNorm, GELU), T5 (pre-norm, RMSNorm, ReLU, unscaled
attention, a cross-attention sublayer in the decoder). Shapes: (B, T, C).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_pipeline.models.attention import Attention, AttnMask, KVCache

IGNORE_INDEX = -1  # label/target id that adds nothing to a loss (padding, prompt tokens), every family
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_tanh", "relu", "swiglu")
NORM_POSITIONS = ("pre", "post")
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class BlockConfig:
    n_embd: int
    n_head: int
    mlp_hidden: int  # inner width of the MLP (per branch for SwiGLU)
    bias: bool = True  # bias in Linear and LayerNorm layers
    dropout: float = 0.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    norm_position: str = "pre"  # pre: x + f(norm(x)) (GPT, T5); post: norm(x + f(x)) (original BERT)
    mlp: str = "gelu"  # gelu | gelu_tanh | relu | swiglu
    attn_scale: float | None = None  # None: 1/sqrt(head size); T5: 1.0
    cross_attention: bool = False  # an encoder-attention sublayer between self-attention and MLP

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("mlp", self.mlp, MLPS),
            ("norm_position", self.norm_position, NORM_POSITIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


class RMSNorm(nn.Module):
    """Scale-only norm x / rms(x) * w (T5LayerNorm); computed in fp32 as T5 does."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(dim=-1, keepdim=True)  # (B, T, 1)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def build_norm(cfg: BlockConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd, cfg.norm_eps)
    return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)


class MLP(nn.Module):
    """c_fc -> activation -> c_proj. SwiGLU: c_fc makes gate and value halves, silu(gate) * value."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        self.act: Callable[[torch.Tensor], torch.Tensor] | None = None if self.gated else _ACTIVATIONS[cfg.mlp]
        self.c_fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden * (2 if self.gated else 1), bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, H) or (B, T, 2H)
        if self.act is None:  # gated (SwiGLU): no activation of its own
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value  # (B, T, H)
        else:
            h = self.act(h)
        return self.c_proj(h)  # (B, T, C)


class Block(nn.Module):
    """Self-attention, optional cross-attention, MLP; each a residual sublayer with a norm."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.ln_1 = build_norm(cfg)
        self.attn = Attention(cfg.n_embd, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout, scale=cfg.attn_scale)
        if cfg.cross_attention:
            self.ln_cross = build_norm(cfg)
            self.cross_attn = Attention(
                cfg.n_embd, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout, scale=cfg.attn_scale
            )
        self.ln_2 = build_norm(cfg)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(
        self,
        x: torch.Tensor,
        mask: AttnMask,
        *,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: AttnMask | None = None,
        memory_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C); memory (B, S, C) is the encoder output for the cross-attention sublayer."""
        x = self._sublayer(x, self.ln_1, lambda h: self.attn(h, mask, rope=rope, cache=cache))
        if memory is not None:
            x = self._sublayer(
                x,
                self.ln_cross,
                lambda h: self.cross_attn(h, memory_mask or AttnMask(), memory=memory, cache=memory_cache),
            )
        return self._sublayer(x, self.ln_2, self.mlp)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2 / BERT init: N(0, std) weights, zero biases, norms at identity (their default)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
