"""Sequence classification on top of any pretrained family's backbone."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.output import ModelOutput


class SequenceClassifier(nn.Module):
    """A linear head over the backbone's one vector per sequence.

    The backbone decides which vector that is (`sequence_features(input_ids, attention_mask)`):
    GPT the last real token (under causal attention the only one that read the whole text),
    BERT its pooled [CLS] state, T5 the mean of its encoder states.
    """

    backbone: FamilyModel
    config: Any  # the backbone's config

    def __init__(self, backbone: FamilyModel, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if not callable(getattr(backbone, "sequence_features", None)):
            raise TypeError(f"{type(backbone).__name__} has no sequence_features(input_ids, attention_mask)")
        self.backbone = backbone
        self.config = backbone.config  # what the backbone is; FLOPs and checkpoints read it
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ModelOutput:
        """input_ids, attention_mask (B, T) (1 real, 0 pad) -> class logits (B, num_labels)."""
        features = self.backbone.sequence_features(input_ids, attention_mask)  # (B, C)
        return ModelOutput(self.head(self.dropout(features)))

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float:
        return self.backbone.count_flops(input_tokens, input_len, target_tokens, target_len)
