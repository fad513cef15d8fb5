"""What every family's `forward` returns: logits, never a loss (objectives own every loss)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    """Logits of one forward pass.

    logits: token logits (B, T, V): the next token (GPT), the masked token (BERT), the target
        token (T5); (M, V) when the caller asked for M selected positions only (BERT's MLM);
        class logits (B, K) from a SequenceClassifier.
    sequence_logits: one vector per sequence (B, K), for families with a sequence head
        (BERT's next-sentence prediction); None otherwise.
    """

    logits: torch.Tensor
    sequence_logits: torch.Tensor | None = None
