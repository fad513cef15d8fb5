"""GPT: a decoder-only causal transformer built from the shared Block, with cached generation.

Two block styles by config: GPT-2 (learned positions, LayerNorm, GELU; the default) and
modern (RoPE, RMSNorm, SwiGLU), each at every size in GPT_PRESETS.
Shapes: B batch, T time, C n_embd, V vocab size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
import torch.nn as nn

from llm_pipeline.models import decoding
from llm_pipeline.models.attention import KVCache, build_attn_mask, positions_from_mask, rope_angles
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.blocks import Block, BlockConfig, build_norm, init_normal
from llm_pipeline.models.checks import check_sequence_length
from llm_pipeline.models.decoding import DecodeStep
from llm_pipeline.models.flops import compute_transformer_flops
from llm_pipeline.models.output import ModelOutput

POS_EMBEDDINGS = ("learned", "rope")
__all__ = ["GPT", "GPTConfig", "GPT_PRESETS", "GPT_STYLES"]

# block styles: GPT-2 (the GPTConfig defaults) and a Llama-like modern block; `style` in a
# model's overrides swaps the style of any size
GPT_STYLES: dict[str, dict[str, Any]] = {
    "gpt2-style": dict(pos_embedding="learned", norm="layernorm", mlp="gelu", bias=True),
    "modern": dict(pos_embedding="rope", norm="rmsnorm", mlp="swiglu", bias=False),
}

_GPT_SIZES: dict[str, dict[str, Any]] = {
    # unit tests: builds and trains in milliseconds
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64),
    # the default run, ~8 minutes of pretraining on 2 CPU cores. Measured with an 8192-token
    # BPE (torch 2.13 CPU, 2 threads, batch 16 x 128): 386 ms/step = 5.3k tok/s, vs 532 ms/step
    # = 3.8k tok/s at n_embd=256, which also reached a worse val loss in equal wall time
    "small-cpu": dict(n_layer=4, n_head=4, n_embd=192, block_size=128),
    # GPT-2 small, for a GPU
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}

# each size in the GPT-2 style under its own name, and as "<size>-modern"
GPT_PRESETS: dict[str, dict[str, Any]] = {
    **{name: {**size, **GPT_STYLES["gpt2-style"]} for name, size in _GPT_SIZES.items()},
    **{f"{name}-modern": {**size, **GPT_STYLES["modern"]} for name, size in _GPT_SIZES.items()},
}


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int  # longest context (positions 0 .. block_size-1), for both position kinds
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # bias in Linear and LayerNorm layers, as in GPT-2
    pos_embedding: str = "learned"  # learned (GPT-2) | rope (rotary, applied to q and k)
    norm: str = "layernorm"  # layernorm | rmsnorm
    mlp: str = "gelu"  # gelu | gelu_tanh | relu | swiglu
    mlp_hidden: int | None = None  # None: 4 * n_embd, or for SwiGLU ~8/3 * n_embd (same parameters)
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    max_seq_len_key: ClassVar[str] = "block_size"  # the field that bounds the input length

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_embedding not in POS_EMBEDDINGS:
            raise ValueError(f"pos_embedding must be one of {', '.join(POS_EMBEDDINGS)}, got {self.pos_embedding!r}")
        self.block_config()  # validates norm and mlp

    @property
    def max_seq_len(self) -> int:
        return self.block_size

    def block_config(self) -> BlockConfig:
        hidden = self.mlp_hidden
        if hidden is None:  # SwiGLU has three matrices; 2/3 of 4C keeps the parameter count
            hidden = 4 * self.n_embd if self.mlp != "swiglu" else 8 * math.ceil(8 * self.n_embd / 3 / 8)
        return BlockConfig(
            n_embd=self.n_embd,
            n_head=self.n_head,
            mlp_hidden=hidden,
            bias=self.bias,
            dropout=self.dropout,
            norm=self.norm,
            norm_eps=self.norm_eps,
            mlp=self.mlp,
        )

    def to_dict(self) -> dict:
        return asdict(self)


if TYPE_CHECKING:

    class _Trunk(nn.ModuleDict):
        """What GPT.transformer holds, for the type checker (at run time it is a plain nn.ModuleDict)."""

        wte: nn.Embedding
        wpe: nn.Embedding  # only with pos_embedding="learned"
        drop: nn.Dropout
        h: nn.ModuleList
        ln_f: nn.Module


class GPT(FamilyModel):
    config: GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        block = config.block_config()
        layers = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(block) for _ in range(config.n_layer)]),
            ln_f=build_norm(block),
        )
        if config.pos_embedding == "learned":
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = cast("_Trunk", nn.ModuleDict(layers))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: input embedding and output projection share one matrix (fewer
        # parameters, and rare tokens get gradient from both ends)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(init_normal)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        # so the stream's variance does not grow with depth (two such writes per block)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        """Parameter count; the tied embedding/head matrix is counted once."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_position_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def new_cache(self) -> list[KVCache]:
        return [KVCache() for _ in range(self.config.n_layer)]

    def hidden_states(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, C) for token ids (B, T).

        attention_mask (B, S) marks real tokens (1) and padding (0) over cached + new tokens,
        S = cached + T; needed for left padding (with right padding causality already hides
        the pads from real tokens). position_ids (B, T) default to counting real tokens only.
        """
        B, T = idx.size()
        past = len(cache[0]) if cache else 0
        check_sequence_length(past + T, self.config.block_size, "block_size")
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(past, past + T, device=idx.device)[None]  # (1, T)
            else:
                position_ids = positions_from_mask(attention_mask)[:, -T:]  # (B, T)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos_embedding == "learned":
            x = x + self.transformer.wpe(position_ids)  # (B or 1, T, C)
        else:
            rope = rope_angles(position_ids, self.config.n_embd // self.config.n_head, self.config.rope_base)
        x = self.transformer.drop(x)
        mask = build_attn_mask(T, past + T, causal=True, key_mask=attention_mask, dtype=x.dtype, device=x.device)
        for i, block in enumerate(self.transformer.h):
            x = block(x, mask, rope=rope, cache=cache[i] if cache else None)
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> ModelOutput:
        """idx (B, T) -> next-token logits (B, T, V)."""
        return ModelOutput(self.lm_head(self.hidden_states(idx, attention_mask, position_ids)))

    def sequence_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (B, C): the hidden state of its last real token, which under
        causal attention is the only one that has read the whole text."""
        right_padded = bool(attention_mask[:, 0].all())  # causality already hides trailing pads
        hidden = self.hidden_states(input_ids, None if right_padded else attention_mask)  # (B, T, C)
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        last = (positions * attention_mask.to(positions.dtype)).argmax(dim=-1)  # (B,) last index with mask 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float:
        """Forward + backward model FLOPs for `input_tokens` real tokens in rows of `input_len`
        (the target arguments are the encoder-decoder's; a decoder has none)."""
        c = self.config
        return compute_transformer_flops(
            self.num_parameters(exclude_position_embedding=True), c.n_layer, c.n_embd, input_len, input_tokens
        )

    # one `generate` (greedy, sampling, beam search) serves every family: see decoding.generate.
    # What is GPT's is decode_step
    generate = decoding.generate

    @torch.no_grad()
    def decode_step(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, use_cache: bool = True
    ) -> DecodeStep:
        """The decoding state of `generate` for prompts input_ids (B, T).

        For prompts of different lengths, left-pad them and pass attention_mask (B, T): positions
        then count real tokens only, so each row generates what it would alone. Contexts longer
        than block_size keep the last block_size tokens (the cache is rebuilt when that window slides).
        """
        ids = input_ids  # (N, T): prompt and tokens so far; N = B, or B*k once beam search expands it
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(ids.dtype)  # (N, T)
        cache: list[KVCache] | None = None

        def next_logits(new: torch.Tensor | None) -> torch.Tensor:
            nonlocal ids, mask, cache
            if new is not None:  # (N, 1)
                ids, mask = torch.cat((ids, new), dim=1), torch.cat((mask, torch.ones_like(new)), dim=1)
            logits, cache = self._next_logits(ids, mask, cache, use_cache)
            return logits  # (N, V)

        def reorder(rows: torch.Tensor) -> None:
            nonlocal ids, mask
            ids, mask = ids[rows], mask[rows]  # the ids too: a sliding window rebuilds the cache from them
            for layer in cache or ():
                layer.reorder(rows)

        return DecodeStep(next_logits, reorder)

    def _next_logits(
        self, idx: torch.Tensor, mask: torch.Tensor, cache: list[KVCache] | None, use_cache: bool
    ) -> tuple[torch.Tensor, list[KVCache] | None]:
        """Last-position logits (B, V) for idx (B, T): feeds only the newest token when cached."""
        window = self.config.block_size
        if cache is None or len(cache[0]) + 1 > window:  # first step, no cache, or the window slid
            cache = self.new_cache() if use_cache else None
            new = idx[:, -window:]
        else:
            new = idx[:, -1:]
        past = len(cache[0]) if cache else 0
        keys_mask = mask[:, -(past + new.size(1)) :]  # (B, S): cached keys and the new ones
        positions = positions_from_mask(keys_mask)[:, -new.size(1) :]  # (B, T)
        key_mask = None if bool(keys_mask.all()) else keys_mask  # no padding: SDPA's fast causal path
        hidden = self.hidden_states(new, key_mask, positions, cache)  # (B, T, C)
        return self.lm_head(hidden[:, -1]), cache
