"""BERT: a bidirectional encoder with segment embeddings and the two pretraining heads.

Post-norm blocks as in the original BERT (and Hugging Face's BertForPreTraining), so the same
weights give the same logits. Shapes: B batch, T time, C n_embd, V vocab size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_pipeline.models.attention import build_attn_mask
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.blocks import Block, BlockConfig, init_normal
from llm_pipeline.models.checks import check_sequence_length
from llm_pipeline.models.flops import compute_transformer_flops
from llm_pipeline.models.output import ModelOutput

BERT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, max_position_embeddings=64),
    "small-cpu": dict(n_layer=4, n_head=4, n_embd=192, max_position_embeddings=128),
    "bert-base": dict(n_layer=12, n_head=12, n_embd=768, max_position_embeddings=512),
}


@dataclass
class BertConfig:
    vocab_size: int
    max_position_embeddings: int  # longest input (learned position table)
    n_layer: int
    n_head: int
    n_embd: int
    mlp_hidden: int | None = None  # None: 4 * n_embd
    type_vocab_size: int = 2  # segments A and B
    dropout: float = 0.0
    norm_eps: float = 1e-12

    max_seq_len_key: ClassVar[str] = "max_position_embeddings"  # the field that bounds the input length

    def __post_init__(self) -> None:
        self.block_config()  # validates head/width divisibility

    @property
    def max_seq_len(self) -> int:
        return self.max_position_embeddings

    def block_config(self) -> BlockConfig:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return BlockConfig(
            n_embd=self.n_embd,
            n_head=self.n_head,
            mlp_hidden=self.mlp_hidden or 4 * self.n_embd,
            dropout=self.dropout,
            norm_eps=self.norm_eps,
            norm_position="post",
            mlp="gelu",
        )

    def to_dict(self) -> dict:
        return asdict(self)


class BertEmbeddings(nn.Module):
    """token + position + segment embeddings, then LayerNorm (post-norm blocks expect a normed input)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.n_embd)
        self.position = nn.Embedding(config.max_position_embeddings, config.n_embd)
        self.token_type = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)  # (B, T, C)
        return self.drop(self.norm(x))


class BERT(FamilyModel):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        C = config.n_embd
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList([Block(config.block_config()) for _ in range(config.n_layer)])
        self.pooler = nn.Linear(C, C)  # tanh(W h_[CLS]): the sentence vector NSP reads
        self.nsp_head = nn.Linear(C, 2)
        # MLM head: transform (dense, GELU, LayerNorm), then the word embedding matrix + a bias
        self.mlm_transform = nn.Linear(C, C)
        self.mlm_norm = nn.LayerNorm(C, eps=config.norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.apply(init_normal)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, token_type_ids (0 = segment A, 1 = B), attention_mask (1 real, 0 pad): (B, T) -> (B, T, C)."""
        B, T = input_ids.shape
        check_sequence_length(T, self.config.max_position_embeddings, "max_position_embeddings")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        mask = build_attn_mask(T, T, causal=False, key_mask=attention_mask, dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
    ) -> ModelOutput:
        """-> MLM logits (B, T, V), or (M, V) at the M True places of mlm_positions (B, T) only
        (the vocabulary projection is most of the head's work: skip the unmasked positions);
        sequence_logits (B, 2) from the NSP head (the class meaning is the objective's)."""
        h = self.hidden_states(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        selected = h if mlm_positions is None else h[mlm_positions]  # (B, T, C) or (M, C)
        return ModelOutput(self.mlm_logits(selected), sequence_logits=self.nsp_head(self.pooled(h)))

    def pooled(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) -> tanh(W h_[CLS] + b) (B, C): BERT's sentence vector."""
        return torch.tanh(self.pooler(h[:, 0]))

    def sequence_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (B, C) for a classification head: the pooled [CLS] state."""
        return self.pooled(self.hidden_states(input_ids, attention_mask=attention_mask))

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float:
        """Forward + backward model FLOPs for `input_tokens` real tokens in rows of `input_len`."""
        c = self.config
        non_position = self.num_parameters() - self.embeddings.position.weight.numel()
        return compute_transformer_flops(non_position, c.n_layer, c.n_embd, input_len, input_tokens)

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> vocabulary logits (..., V)."""
        h = self.mlm_norm(F.gelu(self.mlm_transform(h)))
        return F.linear(h, self.embeddings.word.weight, self.mlm_bias)
