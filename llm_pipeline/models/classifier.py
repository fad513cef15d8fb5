"""Sequence classification on top of a pretrained GPT backbone."""

from __future__ import annotations

import torch
import torch.nn as nn

from llm_pipeline.models.gpt import GPT


class SequenceClassifier(nn.Module):
    """Linear head over the hidden state of each sequence's last real token.

    Inputs are right-padded. The backbone's attention is causal, so the state at
    index `length - 1` has seen the whole text and none of the padding after it.
    """

    def __init__(self, backbone: GPT, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, num_labels)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T), lengths (B,) -> logits (B, num_labels)."""
        hidden = self.backbone.hidden_states(input_ids)  # (B, T, C)
        rows = torch.arange(hidden.size(0), device=hidden.device)  # (B,)
        last = hidden[rows, lengths.to(hidden.device) - 1]  # (B, C)
        return self.head(self.dropout(last))  # (B, num_labels)
