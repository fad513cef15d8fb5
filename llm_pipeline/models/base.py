"""The contract every family's model keeps, so stages, objectives and checkpoints treat them alike."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class FamilyModel(nn.Module):
    """Base of GPT, BERT and T5.

    - `config`: the family's config dataclass (`to_dict()` saves it, `max_seq_len` bounds inputs);
    - `forward(...) -> ModelOutput`: logits only; the objectives own every loss;
    - `sequence_features(input_ids, attention_mask) -> (B, C)`: one vector per sequence, for a
      classification head;
    - `count_flops(...)`: forward + backward model FLOPs of a batch, for MFU.
    """

    config: Any

    def sequence_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float:
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
