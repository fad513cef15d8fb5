"""Pretraining objectives: what one batch costs (loss), what it is worth (metrics, tokens, FLOPs).

The training loop (PretrainModule) is the same for every family; an objective is the only
family-specific piece. `compute` returns the loss to minimize and named metrics, each with
the weight it carries in a validation mean (tokens for a per-token loss, pairs for NSP).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_pipeline.models.blocks import IGNORE_INDEX
from llm_pipeline.training.throughput import compute_transformer_flops

Metrics = dict[str, tuple[torch.Tensor, torch.Tensor | int]]  # name -> (batch mean, weight)


class Objective:
    name: str = ""
    metric_names: tuple[str, ...] = ("loss",)

    def compute(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError

    def count_tokens(self, batch: Any) -> int:
        """Real (non-padding) tokens the model reads in this batch."""
        raise NotImplementedError

    def count_flops(self, model: nn.Module, batch: Any) -> float:
        """Model FLOPs of forward + backward on this batch (see llm_pipeline.training.throughput)."""
        seq_len = _first_tensor(batch).size(-1)
        return compute_transformer_flops(_num_params(model), model.config.n_layer, model.config.n_embd,
                                         seq_len, self.count_tokens(batch))

    def summarize(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validation metrics from the weighted means: adds ppl = exp(loss) by default."""
        return {**means, "ppl": _exp(means["loss"])}


class CausalLM(Objective):
    """Next-token prediction on (x, y) windows: y[t] follows x[t]. Metrics: loss, ppl."""

    name = "causal_lm"

    def compute(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Metrics]:
        x, y = batch  # (B, T), (B, T)
        _, loss = model(x, y)
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
        mlm_logits, nsp_logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        labels = batch["mlm_labels"]  # (B, T), IGNORE_INDEX except at masked positions
        picked = labels != IGNORE_INDEX
        mlm_logits = mlm_logits[picked]  # (M, V): only masked positions are scored
        mlm_loss = F.cross_entropy(mlm_logits, labels[picked]) if len(mlm_logits) else mlm_logits.sum()
        nsp_loss = F.cross_entropy(nsp_logits, batch["nsp_label"])
        loss = mlm_loss + nsp_loss
        n_masked, n_pairs = picked.sum(), len(nsp_logits)
        with torch.no_grad():
            mlm_acc = (mlm_logits.argmax(-1) == labels[picked]).float().sum() / n_masked.clamp(min=1)
            nsp_acc = (nsp_logits.argmax(-1) == batch["nsp_label"]).float().mean()
        return loss, {"loss": (loss, n_pairs), "mlm_loss": (mlm_loss, n_masked), "mlm_acc": (mlm_acc, n_masked),
                      "nsp_loss": (nsp_loss, n_pairs), "nsp_acc": (nsp_acc, n_pairs)}

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
        logits, loss = model(batch["input_ids"], batch["attention_mask"], batch["decoder_input_ids"], labels)
        real = labels != IGNORE_INDEX
        with torch.no_grad():
            acc = (logits.argmax(-1)[real] == labels[real]).float().mean()
        return loss, {"loss": (loss, real.sum()), "acc": (acc, real.sum())}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE_INDEX).sum())

    def count_flops(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
        """Encoder tokens pass the encoder; target tokens the decoder and the LM head."""
        cfg = model.config
        encoder = compute_transformer_flops(_num_params(model.encoder), cfg.n_layer, cfg.n_embd,
                                            batch["input_ids"].size(1), int(batch["attention_mask"].sum()))
        # decoder attention: self over the target (J) plus cross over the input (I)
        seq_len = batch["labels"].size(1) + batch["input_ids"].size(1)
        decoder = compute_transformer_flops(_num_params(model.decoder) + cfg.vocab_size * cfg.n_embd,
                                            cfg.n_decoder_layer or cfg.n_layer, cfg.n_embd, seq_len,
                                            int((batch["labels"] != IGNORE_INDEX).sum()))
        return encoder + decoder


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _first_tensor(batch: Any) -> torch.Tensor:
    return batch["input_ids"] if isinstance(batch, dict) else batch[0]


def _exp(loss: torch.Tensor) -> torch.Tensor:
    return torch.exp(loss.clamp(max=math.log(1e30)))  # clamp: no inf early in training
