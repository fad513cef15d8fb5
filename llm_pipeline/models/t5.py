"""T5 (v1.0, as Hugging Face's T5ForConditionalGeneration): encoder-decoder from the shared Block.

Pre-norm RMSNorm blocks without biases, ReLU MLP, unscaled attention plus a learned relative
position bias (bucketed; bidirectional in the encoder, causal in the decoder; computed once
per stack and shared by its layers), decoder cross-attention to the encoder output, and
embeddings tied to the LM head with the d_model**-0.5 rescale.
Shapes: B batch, S source length, T target length, C n_embd, nh heads, V vocab size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from llm_pipeline.models import decoding
from llm_pipeline.models.attention import Attention, KVCache, build_attn_mask
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.blocks import IGNORE_INDEX, Block, BlockConfig, RMSNorm
from llm_pipeline.models.decoding import DecodeStep
from llm_pipeline.models.flops import compute_transformer_flops
from llm_pipeline.models.output import ModelOutput

T5_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, num_buckets=8, max_distance=16),
    # encoder and decoder together cost about what the 4-layer GPT does per token
    "small-cpu": dict(n_layer=2, n_decoder_layer=2, n_head=4, n_embd=192),
    "t5-small": dict(n_layer=6, n_head=8, n_embd=512, mlp_hidden=2048),
}


@dataclass
class T5Config:
    vocab_size: int
    n_layer: int  # encoder layers
    n_head: int
    n_embd: int
    n_decoder_layer: int | None = None  # None: as many as the encoder
    mlp_hidden: int | None = None  # None: 4 * n_embd (T5-small: 512 -> 2048)
    mlp: str = "relu"  # T5 v1.0; "swiglu" is close to v1.1's gated GELU
    dropout: float = 0.0
    norm_eps: float = 1e-6
    num_buckets: int = 32  # relative position buckets
    max_distance: int = 128  # offsets beyond this share the last bucket
    pad_id: int = 0  # also the decoder start token, as in T5

    max_seq_len_key: ClassVar[str] = ""  # the field that bounds the input length (none: relative positions)

    def __post_init__(self) -> None:
        self.block_config(cross_attention=False)  # validates widths and mlp
        # the log-spaced buckets start at num_buckets // 2 (bidirectional: // 4); a smaller
        # max_distance makes their log ratio negative and the bucket ids run below zero
        if self.max_distance <= self.num_buckets // 2:
            raise ValueError(
                f"max_distance ({self.max_distance}) must exceed num_buckets // 2 ({self.num_buckets // 2})"
            )

    @property
    def max_seq_len(self) -> None:
        return None  # relative positions: no table to run past

    def block_config(self, cross_attention: bool) -> BlockConfig:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return BlockConfig(
            n_embd=self.n_embd,
            n_head=self.n_head,
            mlp_hidden=self.mlp_hidden or 4 * self.n_embd,
            bias=False,
            dropout=self.dropout,
            norm="rmsnorm",
            norm_eps=self.norm_eps,
            mlp=self.mlp,
            attn_scale=1.0,
            cross_attention=cross_attention,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def relative_position_bucket(
    relative: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Bucket of each key-minus-query offset: exact for small offsets, log-spaced up to max_distance."""
    buckets = torch.zeros_like(relative)
    if bidirectional:  # half the buckets for keys after the query
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:  # causal: only keys at or before the query matter
        distance = (-relative).clamp(min=0)
    exact = num_buckets // 2
    log_bucket = (
        exact
        + (
            torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (num_buckets - exact)
        ).long()
    )
    log_bucket = log_bucket.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    def __init__(self, config: T5Config, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        self.embedding = nn.Embedding(config.num_buckets, config.n_head)  # one scalar per bucket and head

    def forward(self, q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
        """Bias (1, nh, T, S) for queries at the last q_len of k_len positions."""
        queries = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # (T, 1)
        keys = torch.arange(k_len, device=device)[None]  # (1, S)
        buckets = relative_position_bucket(keys - queries, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1)[None]  # (T, S, nh) -> (1, nh, T, S)


class T5Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention to `memory`)."""

    def __init__(self, config: T5Config, n_layer: int, decoder: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.rel_bias = RelativePositionBias(config, bidirectional=not decoder)
        self.blocks = nn.ModuleList([Block(config.block_config(cross_attention=decoder)) for _ in range(n_layer)])
        self.ln_f = RMSNorm(config.n_embd, config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) embedded tokens -> (B, T, C). cache: (self, cross) KVCache per decoder layer."""
        T = x.size(1)
        past = len(cache[0][0]) if cache else 0
        bias = self.rel_bias(T, past + T, x.device)  # (1, nh, T, S)
        mask = build_attn_mask(
            T, past + T, causal=self.decoder, key_mask=attention_mask, position_bias=bias, dtype=x.dtype
        )
        cross = None
        if memory is not None:
            cross = build_attn_mask(T, memory.size(1), causal=False, key_mask=memory_mask, dtype=x.dtype)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            self_cache, cross_cache = cache[i] if cache else (None, None)
            x = block(x, mask, cache=self_cache, memory=memory, memory_mask=cross, memory_cache=cross_cache)
        return self.drop(self.ln_f(x))


class T5(FamilyModel):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.n_embd)  # encoder, decoder and LM head
        self.encoder = T5Stack(config, config.n_layer, decoder=False)
        self.decoder = T5Stack(config, config.n_decoder_layer or config.n_layer, decoder=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """T5's init (Mesh TensorFlow): std 1/sqrt(fan-in); the query also takes the 1/sqrt(hs)
        that the unscaled attention leaves out."""
        C, hs = self.config.n_embd, self.config.n_embd // self.config.n_head
        if module is self.lm_head:
            return  # tied to `shared`
        if module is self.shared:
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, RelativePositionBias):
            nn.init.normal_(module.embedding.weight, std=C**-0.5)
        elif isinstance(module, Attention):  # after its Linears (apply visits children first)
            q, kv = module.c_attn.weight.data.split((C, 2 * C))  # (C, C), (2C, C)
            nn.init.normal_(q, std=(C * hs) ** -0.5)
            nn.init.normal_(kv, std=C**-0.5)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.weight.size(1) ** -0.5)

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        return [(KVCache(), KVCache()) for _ in self.decoder.blocks]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, attention_mask (B, S) -> encoder output (B, S, C)."""
        return self.encoder(self.shared(input_ids), attention_mask)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> torch.Tensor:
        """decoder_input_ids (B, T), encoder output (B, S, C) -> logits (B, T, V)."""
        h = self.decoder(self.shared(decoder_input_ids), memory=memory, memory_mask=memory_mask, cache=cache)
        return self.lm_head(h * self.config.n_embd**-0.5)  # tied embeddings: rescale as T5 does

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs: start token, then labels[:-1] (ignored ids -> pad)."""
        start = torch.full_like(labels[:, :1], self.config.pad_id)
        shifted = torch.cat((start, labels[:, :-1]), dim=1)  # (B, T)
        return shifted.masked_fill(shifted == IGNORE_INDEX, self.config.pad_id)

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids (B, S) with attention_mask (B, S), decoder_input_ids (B, T) (teacher forcing:
        `shift_right(labels)`) -> target logits (B, T, V)."""
        return ModelOutput(self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask))

    def sequence_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (B, C) for a classification head: the mean encoder state over real tokens."""
        h = self.encode(input_ids, attention_mask)  # (B, S, C)
        weights = attention_mask.to(h.dtype)[..., None]  # (B, S, 1)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float:
        """Forward + backward model FLOPs: input tokens pass the encoder; target tokens the
        decoder (self-attention over the target, cross-attention over the input) and the LM head."""
        c = self.config
        encoder = compute_transformer_flops(_count(self.encoder), c.n_layer, c.n_embd, input_len, input_tokens)
        decoder = compute_transformer_flops(
            _count(self.decoder) + self.shared.weight.numel(),
            c.n_decoder_layer or c.n_layer,
            c.n_embd,
            target_len + input_len,
            target_tokens,
        )
        return encoder + decoder

    # one `generate` (greedy, sampling, beam search) serves every family: see decoding.generate.
    # What is T5's is decode_step
    generate = decoding.generate

    @torch.no_grad()
    def decode_step(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, use_cache: bool = True
    ) -> DecodeStep:
        """The decoding state of `generate` for encoder inputs input_ids, attention_mask (B, S).

        The encoder runs once, here; the decoder starts from pad_id (T5's start token) and, with
        the cache, each step feeds it only the newest token.
        """
        memory = self.encode(input_ids, attention_mask)  # (N, S, C); N = B, or B*k once beam search expands it
        memory_mask = attention_mask  # (N, S) or None
        decoded = torch.full_like(input_ids[:, :1], self.config.pad_id)  # (N, t): start token, tokens so far
        cache = self.new_cache() if use_cache else None

        def next_logits(new: torch.Tensor | None) -> torch.Tensor:
            nonlocal decoded
            if new is not None:  # (N, 1)
                decoded = torch.cat((decoded, new), dim=1)
            step = decoded[:, -1:] if cache is not None else decoded  # cached: only the newest token runs
            return self.decode(step, memory, memory_mask, cache)[:, -1]  # (N, V)

        def reorder(rows: torch.Tensor) -> None:
            nonlocal memory, memory_mask, decoded
            memory, decoded = memory[rows], decoded[rows]
            memory_mask = None if memory_mask is None else memory_mask[rows]
            for self_cache, cross_cache in cache or ():  # cross: the encoder keys/values, once per row
                self_cache.reorder(rows)
                cross_cache.reorder(rows)

        return DecodeStep(next_logits, reorder)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
