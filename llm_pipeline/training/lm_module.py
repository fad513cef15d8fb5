"""Lightning wrapper for causal-LM pretraining of a GPT."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from llm_pipeline.models.gpt import GPT, GPTConfig
from llm_pipeline.training.optim import OptimConfig, build_optimizers

__all__ = ["CausalLMModule", "OptimConfig"]


class CausalLMModule(L.LightningModule):
    """Next-token prediction. Logs train/loss, train/lr per step; val/loss, val/ppl per validation.

    Built from plain dicts as well as config objects, so `load_from_checkpoint` can rebuild it
    from the saved hyperparameters.
    """

    def __init__(self, model_config: GPTConfig | dict[str, Any], optim: OptimConfig | dict[str, Any]) -> None:
        super().__init__()
        model_config = model_config if isinstance(model_config, GPTConfig) else GPTConfig(**model_config)
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**optim)
        self.save_hyperparameters({"model_config": model_config.to_dict(), "optim": self.optim.model_dump()})
        self.model = GPT(model_config)
        # token-weighted mean over all validation batches (and ranks); ppl = exp(mean loss),
        # not the mean of per-batch perplexities
        self.val_loss = MeanMetric()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        _, loss = self.model(x, y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        self.val_loss.update(loss, weight=y.numel())

    def on_validation_epoch_end(self) -> None:
        mean_loss = self.val_loss.compute()  # synced across ranks
        self.val_loss.reset()
        self.log("val/loss", mean_loss, prog_bar=True)
        self.log("val/ppl", torch.exp(mean_loss.clamp(max=math.log(1e30))))  # clamp: no inf early on

    def configure_optimizers(self) -> dict:
        return build_optimizers(self.model, self.optim)
