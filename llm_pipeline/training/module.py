"""The one LightningModule of every training stage: a model, an objective, an optimizer config.

Pretraining (any family) and fine-tuning (any task) differ only in the model and the objective
handed in, so every trainer option (compile, strategy, precision, accumulation) works the same in both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
import torch.nn as nn
from torchmetrics import MeanMetric

from llm_pipeline.training.objectives import Metrics, Model, Objective
from llm_pipeline.training.optim import OptimConfig, build_optimizers

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig


class TrainingModule(L.LightningModule):
    """Logs train/<metric> and train/lr per step, val/<metric> per validation (weighted means
    over the whole validation set, synced across ranks, then the objective's summary, e.g. ppl).

    The model and objective are objects, not hyperparameters: to restore from a Lightning
    checkpoint, pass them again: `TrainingModule.load_from_checkpoint(path, model=..., objective=...)`.
    """

    def __init__(self, model: Model, objective: Objective, optim: OptimConfig | dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**optim)
        self.save_hyperparameters({"objective": objective.name, "optim": self.optim.model_dump()})
        self.val_metrics = nn.ModuleDict({name: MeanMetric() for name in objective.metric_names})
        # what the steps call; CompileModel swaps in a torch.compile'd version, so the loss is
        # compiled with the model (inductor fuses the log-softmax and cross-entropy over the logits)
        self.compute_loss = self.objective_loss

    def objective_loss(self, batch: Any) -> tuple[torch.Tensor, Metrics]:
        return self.objective.compute(self.model, batch)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute_loss(batch)
        for name, (value, _) in metrics.items():
            # sync_dist: with several ranks the logged value is the mean over all of them (one
            # all-reduce of a scalar), not rank zero's share of the batch
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss", sync_dist=True)
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)  # configure_optimizers returns one optimizer
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, metrics = self.compute_loss(batch)
        for name, (value, weight) in metrics.items():
            cast(MeanMetric, self.val_metrics[name]).update(value, weight=weight)

    def on_validation_epoch_end(self) -> None:
        # cast: val_metrics holds MeanMetrics, but a ModuleDict's values are typed as plain Modules
        means = {name: cast(MeanMetric, metric).compute() for name, metric in self.val_metrics.items()}
        for metric in self.val_metrics.values():
            cast(MeanMetric, metric).reset()
        for name, value in self.objective.summarize(means).items():
            self.log(f"val/{name}", value, prog_bar=name == "loss")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return build_optimizers(self.model, self.optim)

    # what a batch is worth, for TokenThroughputMonitor
    def count_tokens(self, batch: Any) -> int:
        return self.objective.count_tokens(batch)

    def count_flops(self, batch: Any) -> float:
        return self.objective.count_flops(self.model, batch)
