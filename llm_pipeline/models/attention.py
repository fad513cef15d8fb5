"""The one attention module every family uses, plus what it consumes: masks, RoPE, a KV cache.

Shapes: B batch, T query length, S key length, C width, nh heads, hs head size (C // nh).
All three families run attention through `F.scaled_dot_product_attention`; they differ only
in the mask they hand it (causal / padding / T5's relative position bias) and the scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class AttnMask:
    """Which keys each query may see, in the form SDPA takes.

    `bias` is added to the attention scores: (B or 1, nh or 1, T, S), large negative where
    a key is hidden. With no bias, `is_causal` lets SDPA use its fused causal kernel.
    """

    bias: torch.Tensor | None = None
    is_causal: bool = False


def build_attn_mask(
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    key_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> AttnMask:
    """Combine causality, key padding (B, S) 1=real 0=pad, and an additive bias into one AttnMask.

    Queries are the last `q_len` of the `k_len` positions (the rest are cached keys). `device`
    is where a built mask goes when neither key_mask nor position_bias says.
    """
    if key_mask is None and position_bias is None:
        if not causal or q_len == 1:  # one new query may see every cached key
            return AttnMask()
        if q_len == k_len:
            return AttnMask(is_causal=True)  # fast path: SDPA builds the mask itself
    if key_mask is not None:
        device = key_mask.device
    elif position_bias is not None:
        device = position_bias.device
    if not causal and position_bias is None:
        # padding only (BERT, T5's cross-attention): one row per sequence that SDPA broadcasts
        # over heads and queries, not a (B, 1, T, S) tensor of T identical rows
        keep = key_mask[:, None, None, :].bool()  # type: ignore[index]  # key_mask is set: the first return
        return AttnMask(
            bias=torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)
        )
    # else: causal, unmasked, 1 < q_len < k_len: several new queries over a cache (chunked prefill)
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device)  # (T, S)
    if causal:
        allowed = allowed.tril(diagonal=k_len - q_len)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()  # (B, 1, T, S)
    # dtype minimum, not -inf: a query that sees no key at all (a left-pad position) gets
    # uniform attention instead of NaN; its output is garbage that nothing reads
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    bias = bias.masked_fill(~allowed, torch.finfo(dtype).min)
    if position_bias is not None:
        bias = position_bias.to(dtype) + bias  # (B or 1, nh, T, S)
    return AttnMask(bias=bias)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, S) counting only real tokens, so left padding does not shift positions."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def rope_angles(positions: torch.Tensor, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for rotary embeddings at `positions` (B, T) -> each (B, 1, T, hs)."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, device=positions.device).float() / head_size)  # (hs/2,)
    angles = positions[..., None].float() * inv_freq  # (B, T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, hs): rotate-half layout (GPT-NeoX / Llama)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (x_i, x_{i+hs/2}) pair of x (B, nh, T, hs) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class KVCache:
    """Keys and values (B, nh, S, hs) of one attention layer, kept between generation steps."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.size(2)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys/values; return all keys/values so far."""
        self.k = k if self.k is None else torch.cat((self.k, k), dim=2)
        self.v = v if self.v is None else torch.cat((self.v, v), dim=2)
        return self.k, self.v

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (B',), in that order, repeats allowed: beam search follows each
        beam back to the row it extends (and first expands each prompt row into its beams)."""
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, rows), self.v.index_select(0, rows)  # (B', nh, S, hs)


class Attention(nn.Module):
    """Multi-head self- or cross-attention.

    `c_attn` projects to q, k, v of all heads at once (C -> 3C). Self-attention applies it to
    x; cross-attention takes q's slice from x and k/v's slices from `memory`. `scale` None is
    the usual 1/sqrt(hs); T5 uses 1.0 (its init folds the scaling into the query weights).
    """

    def __init__(
        self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0, scale: float | None = None
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.dropout, self.scale = n_head, dropout, scale
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def _project(self, x: torch.Tensor, memory: torch.Tensor | None, cache: KVCache | None):
        C = x.size(-1)
        if memory is None:
            return [self._heads(t) for t in self.c_attn(x).split(C, dim=2)]
        w_q, w_kv = self.c_attn.weight.split((C, 2 * C))
        b_q, b_kv = self.c_attn.bias.split((C, 2 * C)) if self.c_attn.bias is not None else (None, None)
        q = self._heads(F.linear(x, w_q, b_q))
        if cache is not None and len(cache):  # encoder keys/values do not change between steps
            return q, cache.k, cache.v
        k, v = F.linear(memory, w_kv, b_kv).split(C, dim=2)
        return q, self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        mask: AttnMask,
        *,
        memory: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C), memory (B, S, C) for cross-attention -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self._project(x, memory, cache)  # (B, nh, T, hs), (B, nh, S, hs) x2
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None and (memory is None or not len(cache)):
            k, v = cache.append(k, v)  # self-attention grows; cross-attention fills once
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask.bias,
            is_causal=mask.is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads
        return self.c_proj(y)
