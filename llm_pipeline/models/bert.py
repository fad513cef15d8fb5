"""BERT: a bidirectional encoder with segment embeddings and the two pretraining heads.

Post-norm blocks as in the original BERT (and Hugging Face's BertForPreTraining), so the same
weights give the same logits. Shapes: B batch, T time, C n_embd, V vocab size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_pipeline.models.attention import build_attn_mask
from llm_pipeline.models.blocks import Block, BlockConfig, init_normal
from llm_pipeline.models.checks import check_sequence_length


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

    def __post_init__(self) -> None:
        self.block_config()  # validates head/width divisibility

    @property
    def max_seq_len(self) -> int:
        return self.max_position_embeddings

    def block_config(self) -> BlockConfig:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return BlockConfig(n_embd=self.n_embd, n_head=self.n_head, mlp_hidden=self.mlp_hidden or 4 * self.n_embd,
                           dropout=self.dropout, norm_eps=self.norm_eps, norm_position="post", mlp="gelu")

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


class BERT(nn.Module):
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

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mlm_logits (B, T, V) over every position, nsp_logits (B, 2) (class meaning is the objective's)."""
        h = self.hidden_states(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        return self.mlm_logits(h), self.nsp_head(torch.tanh(self.pooler(h[:, 0])))

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> vocabulary logits (..., V); pass only masked positions to save work."""
        h = self.mlm_norm(F.gelu(self.mlm_transform(h)))
        return F.linear(h, self.embeddings.word.weight, self.mlm_bias)
