"""Objectives: every loss of the pipeline, pretraining and fine-tuning alike.

The training loop (TrainingModule) is the same for every family and task; an objective is the
only model-specific piece. `compute` runs the model, returns the loss to minimize and named
metrics, each with the weight it carries in a validation mean (tokens for a per-token loss,
pairs or examples for a sequence-level one). Models return logits (ModelOutput); the losses
live here.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.blocks import IGNORE_INDEX
from llm_pipeline.models.classifier import SequenceClassifier

# what an objective trains: a family model (pretraining) or a classifier over one (fine-tuning)
Model = FamilyModel | SequenceClassifier


class FlopCounter(Protocol):
    """What count_flops needs of a model (FamilyModel and SequenceClassifier both have it)."""

    def count_flops(self, input_tokens: int, input_len: int, target_tokens: int = 0, target_len: int = 0) -> float: ...


Metrics = dict[str, tuple[torch.Tensor, torch.Tensor | int]]  # name -> (batch mean, weight)


class Objective:
    name: str = ""
    metric_names: tuple[str, ...] = ("loss",)

    def compute(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError

    def count_tokens(self, batch: Any) -> int:
        """Real (non-padding) tokens the model reads in this batch."""
        raise NotImplementedError

    def count_flops(self, model: FlopCounter, batch: Any) -> float:
        """Model FLOPs of forward + backward on this batch; the model counts them (`model.count_flops`)."""
        return model.count_flops(self.count_tokens(batch), _first_tensor(batch).size(-1))

    def summarize(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validation metrics from the weighted means: adds ppl = exp(loss) by default."""
        return {**means, "ppl": _exp(means["loss"])}


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (..., V) against targets (...), skipping IGNORE_INDEX."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)


class CausalLM(Objective):
    """Next-token prediction on (x, y) windows: y[t] follows x[t]. Metrics: loss, ppl."""

    name = "causal_lm"

    def compute(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        x, y = batch  # (B, T), (B, T)
        loss = token_cross_entropy(model(x).logits, y)
        return loss, {"loss": (loss, (y != IGNORE_INDEX).sum())}

    def count_tokens(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return batch[0].numel()


class MaskedLMWithNSP(Objective):
    """BERT: loss = masked-LM cross-entropy + next-sentence cross-entropy (as in the paper).

    Batches carry nsp_label in BERT's classes (0 IsNext, 1 NotNext). Metrics: loss, mlm_loss,
    mlm_acc (per masked token), nsp_loss, nsp_acc (per pair); val adds mlm_ppl.
    """

    name = "mlm_nsp"
    metric_names = ("loss", "mlm_loss", "mlm_acc", "nsp_loss", "nsp_acc")

    def compute(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        labels = batch["mlm_labels"]  # (B, T), IGNORE_INDEX except at masked positions
        picked = labels != IGNORE_INDEX  # (B, T)
        out = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], mlm_positions=picked)
        mlm_logits, targets = out.logits, labels[picked]  # (M, V), (M,): only masked positions are scored
        mlm_loss = F.cross_entropy(mlm_logits, targets) if len(targets) else mlm_logits.sum()
        nsp_logits = out.sequence_logits  # (B, 2)
        nsp_loss = F.cross_entropy(nsp_logits, batch["nsp_label"])
        loss = mlm_loss + nsp_loss
        n_masked, n_pairs = picked.sum(), len(nsp_logits)
        with torch.no_grad():
            mlm_acc = (mlm_logits.argmax(-1) == targets).float().sum() / n_masked.clamp(min=1)
            nsp_acc = (nsp_logits.argmax(-1) == batch["nsp_label"]).float().mean()
        return loss, {
            "loss": (loss, n_pairs),
            "mlm_loss": (mlm_loss, n_masked),
            "mlm_acc": (mlm_acc, n_masked),
            "nsp_loss": (nsp_loss, n_pairs),
            "nsp_acc": (nsp_acc, n_pairs),
        }

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def summarize(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**means, "mlm_ppl": _exp(means["mlm_loss"])}


class SpanCorruption(Objective):
    """T5: cross-entropy of the target (sentinels + dropped spans + </s>). Metrics: loss, acc; val adds ppl."""

    name = "span_corruption"
    metric_names = ("loss", "acc")

    def compute(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        labels = batch["labels"]  # (B, J)
        logits = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"]).logits  # (B, J, V)
        loss = token_cross_entropy(logits, labels)
        real = labels != IGNORE_INDEX
        with torch.no_grad():
            acc = (logits.argmax(-1)[real] == labels[real]).float().mean()
        return loss, {"loss": (loss, real.sum()), "acc": (acc, real.sum())}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE_INDEX).sum())

    def count_flops(self, model: FlopCounter, batch: dict[str, torch.Tensor]) -> float:
        labels = batch["labels"]
        return model.count_flops(
            int(batch["attention_mask"].sum()),
            batch["input_ids"].size(1),
            int((labels != IGNORE_INDEX).sum()),
            labels.size(1),
        )


class SequenceClassification(Objective):
    """Fine-tuning a SequenceClassifier: cross-entropy over labels. Metrics: loss, acc (per example).

    Batches are (input_ids (B, T) right-padded, lengths (B,), labels (B,)).
    """

    name = "classification"
    metric_names = ("loss", "acc")

    def compute(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, Metrics]:
        input_ids, lengths, labels = batch
        logits = model(input_ids, lengths_to_mask(lengths, input_ids.size(1))).logits  # (B, K)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"loss": (loss, len(labels)), "acc": (acc, len(labels))}

    def count_tokens(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> int:
        return int(batch[1].sum())

    def summarize(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(means)  # exp(loss) means nothing for a label loss


def text_to_text_objective(style: str) -> Objective:
    """A writer's fine-tuning loss: T5's target cross-entropy (style encoder_decoder, the batches
    of data/loaders/seq2seq) or the target-only causal LM loss (style prompted)."""
    return SpanCorruption() if style == "encoder_decoder" else CausalLM()


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Lengths (B,) of right-padded rows -> attention mask (B, max_len), 1 on real tokens."""
    return (torch.arange(max_len, device=lengths.device)[None] < lengths[:, None]).long()


def _first_tensor(batch: Any) -> torch.Tensor:
    return batch["input_ids"] if isinstance(batch, dict) else batch[0]


def _exp(loss: torch.Tensor) -> torch.Tensor:
    return torch.exp(loss.clamp(max=math.log(1e30)))  # clamp: no inf early in training
