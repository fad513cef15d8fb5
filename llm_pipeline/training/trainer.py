"""One Lightning Trainer for every training stage, configured from params.

Hardware lives only in the config (accelerator, devices, strategy, num_nodes, precision,
compile), so the same stage code runs on a laptop CPU or on several GPU nodes. Every trainer
checkpoints (every N steps and at the last step) and logs throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.training.callbacks import CompileModel
from llm_pipeline.training.throughput import ThroughputMonitor


class TrainerConfig(StageConfig):
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = Field("32-true", description="e.g. 32-true, bf16-mixed, 16-mixed")
    compile: bool = Field(False, description="torch.compile the module's `.model` before training")
    max_steps: int = Field(1000, gt=0, description="optimizer steps")
    val_check_interval: int = Field(200, gt=0, description="validate every N optimizer steps")
    limit_val_batches: int | float = Field(1.0, description="int: batches; float: fraction of the val set")
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = Field(10, gt=0)
    checkpoint_every_n_steps: int | None = Field(
        None, gt=0, description="save a checkpoint every N optimizer steps (default val_check_interval) "
                                "and at the last step")
    seed: int = Field(1337, description="the stage seeds with this before building the model")
    enable_progress_bar: bool = True
    deterministic: bool = False


def build_trainer(
    cfg: TrainerConfig,
    default_root_dir: str | Path,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
) -> L.Trainer:
    """A Trainer that checkpoints into `<default_root_dir>/checkpoints` (keeping `last.ckpt`)."""
    checkpoint = FinalStepCheckpoint(
        dirpath=Path(default_root_dir) / "checkpoints",
        save_last=True,
        save_top_k=1,  # with no monitor: the latest periodic checkpoint
        every_n_train_steps=cfg.checkpoint_every_n_steps or cfg.val_check_interval,
    )
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        # Lightning counts micro-batches here; the config counts optimizer steps
        val_check_interval=cfg.val_check_interval * cfg.accumulate_grad_batches,
        check_val_every_n_epoch=None,  # count val_check_interval in steps across epoch boundaries
        limit_val_batches=cfg.limit_val_batches,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.enable_progress_bar,
        deterministic=cfg.deterministic,
        # no_grad instead of inference_mode for eval: metric states reset under inference mode
        # become inference tensors and break the next fit (e.g. validate() before fit())
        inference_mode=False,
        default_root_dir=str(default_root_dir),
        logger=list(loggers) if loggers else False,
        callbacks=[checkpoint, ThroughputMonitor(cfg.log_every_n_steps),
                   *([CompileModel()] if cfg.compile else []), *callbacks],
    )


class FinalStepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves the last step when max_steps is not a multiple of
    every_n_train_steps (Lightning alone would leave the final steps unsaved)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # false when this step is saved already
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
