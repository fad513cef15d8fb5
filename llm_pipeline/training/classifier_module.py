"""Lightning wrapper for fine-tuning a GPT backbone as a sequence classifier."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT, GPTConfig
from llm_pipeline.training.optim import OptimConfig, build_optimizers

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids (B, T), lengths (B,), labels (B,)


class ClassifierModule(L.LightningModule):
    """Cross-entropy over labels. Logs train/loss per step; val/loss, val/acc per validation.

    The backbone starts from random weights; to fine-tune a pretrained model, load its
    state dict into `module.classifier.backbone` before fitting.
    """

    def __init__(
        self,
        model_config: GPTConfig | dict[str, Any],
        num_labels: int,
        optim: OptimConfig | dict[str, Any],
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        model_config = model_config if isinstance(model_config, GPTConfig) else GPTConfig(**model_config)
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**optim)
        self.save_hyperparameters(
            {
                "model_config": model_config.to_dict(),
                "num_labels": num_labels,
                "optim": self.optim.model_dump(),
                "head_dropout": head_dropout,
            }
        )
        self.classifier = SequenceClassifier(GPT(model_config), num_labels, head_dropout)
        self.val_loss = MeanMetric()  # example-weighted over the whole validation set
        self.val_acc = MeanMetric()

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(input_ids, lengths)  # (B, num_labels)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        input_ids, lengths, labels = batch
        loss = F.cross_entropy(self(input_ids, lengths), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        input_ids, lengths, labels = batch
        logits = self(input_ids, lengths)  # (B, num_labels)
        self.val_loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        self.val_acc.update((logits.argmax(dim=-1) == labels).float())

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        self.val_loss.reset()
        self.val_acc.reset()

    def configure_optimizers(self) -> dict:
        return build_optimizers(self.classifier, self.optim)
