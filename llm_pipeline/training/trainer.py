"""One Lightning Trainer for every training stage, configured from params.

Hardware lives only in the config (accelerator, devices, strategy, num_nodes, precision,
compile), so the same stage code runs on a laptop CPU or on several GPU nodes. Every trainer
checkpoints (every N steps and at the last step, keeping the last K; training/checkpointing.py),
restores the RNG states when it resumes, and logs throughput.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast, get_args

import lightning as L
import torch
from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from pydantic import Field, ValidationInfo, field_validator, model_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError
from llm_pipeline.training.callbacks import CompileModel
from llm_pipeline.training.checkpointing import RngState, SafeCheckpointIO
from llm_pipeline.training.distributed import FSDPConfig, available_devices, build_fsdp_strategy
from llm_pipeline.training.progress import ProgressLog, has_terminal
from llm_pipeline.training.throughput import TokenThroughputMonitor


def known_accelerators() -> list[str]:
    """Names Lightning's Trainer takes for `accelerator` (whether or not this machine has one)."""
    return ["auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())]


def known_strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def known_precisions() -> list[str]:
    return [*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)]


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
    global_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="pretraining: tokens per optimizer step over all processes; sets accumulate_grad_batches "
        "from the batch size, sequence length and world size, so the global batch stays when devices change",
    )
    fsdp: FSDPConfig = Field(default_factory=FSDPConfig, description="used with strategy: fsdp (GPUs)")
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = Field(10, gt=0)
    checkpoint_every_n_steps: int | None = Field(
        None,
        gt=0,
        description="save a checkpoint every N optimizer steps (default val_check_interval) and at the last step",
    )
    seed: int = Field(1337, description="the stage seeds with this before building the model")
    resume: str = Field(
        "auto",
        description="auto: from the newest checkpoint of the same params and inputs, if any; "
        "never: from step 0 (old checkpoints removed); or a checkpoint file's path",
    )
    keep_checkpoints: int = Field(2, ge=1, description="the last K checkpoints are kept")
    enable_progress_bar: bool = Field(
        True, description="tqdm bar on a terminal; without one (a worker's or dvc's log) progress lines instead"
    )
    progress_every_seconds: float = Field(
        20.0, gt=0, description="without a terminal: a progress line (step, loss, tok/s, ETA) this often"
    )
    deterministic: bool = False

    @field_validator("accelerator", "strategy", "precision")
    @classmethod
    def _known_to_lightning(cls, value: str, info: ValidationInfo) -> str:
        """Refuse a name Lightning would reject only once the Trainer is built, listing the ones it takes."""
        known = {"accelerator": known_accelerators, "strategy": known_strategies, "precision": known_precisions}
        allowed = known[info.field_name]()  # type: ignore[index]  # field_name is one of the three above
        if (value.lower() if info.field_name == "strategy" else value) not in allowed:
            raise ValueError(
                f"trainer.{info.field_name} {value!r} is not one Lightning takes; use one of {', '.join(allowed)}"
            )
        return value

    @model_validator(mode="after")
    def _validation_runs(self) -> TrainerConfig:
        if self.max_steps < self.val_check_interval:
            raise ValueError(
                f"trainer.max_steps ({self.max_steps}) is less than trainer.val_check_interval "
                f"({self.val_check_interval}), so no validation would run; set trainer.val_check_interval "
                f"to at most {self.max_steps}"
            )
        return self


def check_hardware(cfg: TrainerConfig) -> None:
    """Refuse, before any Trainer or process group exists, hardware this machine lacks.

    The names (accelerator, strategy, precision) are checked when the config loads; the
    device count depends on the machine the stage runs on, so it is checked here.
    """
    for key, value, known in (
        ("accelerator", cfg.accelerator, known_accelerators()),
        ("strategy", cfg.strategy.lower(), known_strategies()),
        ("precision", cfg.precision, known_precisions()),
    ):
        if value not in known:  # a config built with model_construct skips the validators
            raise PipelineError(f"trainer.{key} {value!r} is not one Lightning takes; use one of {', '.join(known)}")
    if cfg.strategy.lower().startswith("fsdp") and (cfg.accelerator == "cpu" or not torch.cuda.is_available()):
        raise PipelineError(
            f"trainer.strategy {cfg.strategy!r} shards the model over CUDA GPUs and this machine has none; "
            "use strategy ddp (or auto) here"
        )
    have = available_devices(cfg.accelerator)
    if have is None:
        return
    if have == 0:
        raise PipelineError(
            f"trainer.accelerator {cfg.accelerator!r}: this machine has no {cfg.accelerator} device; "
            f"use trainer.accelerator=cpu (or auto)"
        )
    devices = cfg.devices
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return
        try:
            devices = int(text)
        except ValueError:
            ids = [part for part in text.split(",") if part.strip()]
            if not ids or not all(part.strip().isdigit() for part in ids):
                raise PipelineError(
                    f"trainer.devices {cfg.devices!r}: expected a count, -1 (all), 'auto' "
                    "or a comma-separated list of device indices"
                ) from None
            top = max(int(part) for part in ids)
            if top >= have:
                raise PipelineError(
                    f"trainer.devices {cfg.devices!r}: device index {top}, but the {cfg.accelerator} "
                    f"accelerator has only {have} device(s) on this machine"
                ) from None
            return
    if devices == 0 or devices < -1:
        raise PipelineError(f"trainer.devices {cfg.devices!r}: expected a positive count, -1 (all) or 'auto'")
    if devices > have:
        raise PipelineError(
            f"trainer.devices {cfg.devices!r}: the {cfg.accelerator} accelerator has only {have} "
            f"device(s) on this machine; use at most {have}, -1 (all) or 'auto'"
        )


def build_trainer(
    cfg: TrainerConfig,
    default_root_dir: str | Path,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    fingerprint: str = "",
) -> L.Trainer:
    """A Trainer that checkpoints into `checkpoint_dir` (default `<default_root_dir>/checkpoints`),
    through SafeCheckpointIO with `fingerprint` in its manifest."""
    check_hardware(cfg)
    checkpoint_dir = Path(checkpoint_dir or Path(default_root_dir) / "checkpoints")
    checkpoint = FinalStepCheckpoint(
        dirpath=checkpoint_dir,
        filename="step-{step:06d}",
        auto_insert_metric_name=False,
        monitor="step",  # with mode max and top k: the K latest
        mode="max",
        save_top_k=cfg.keep_checkpoints,
        every_n_train_steps=cfg.checkpoint_every_n_steps or cfg.val_check_interval,
        # a step-N file left by a run killed before it listed it in checkpoints.json is that
        # step's state again: overwrite it, not save "step-N-v1" beside it (seen after two kills)
        enable_version_counter=False,
    )
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=build_fsdp_strategy(cfg.fsdp) if cfg.strategy.lower() == "fsdp" else cfg.strategy,
        num_nodes=cfg.num_nodes,
        # cast: the validator keeps precision to known_precisions(), Lightning's string literals
        precision=cast("_PRECISION_INPUT_STR | _PRECISION_INPUT_STR_ALIAS", cfg.precision),
        max_steps=cfg.max_steps,
        # Lightning counts micro-batches here; the config counts optimizer steps
        val_check_interval=cfg.val_check_interval * cfg.accumulate_grad_batches,
        check_val_every_n_epoch=None,  # count val_check_interval in steps across epoch boundaries
        limit_val_batches=cfg.limit_val_batches,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        log_every_n_steps=cfg.log_every_n_steps,
        # a bar in a file is one endless line of carriage returns: log lines instead
        enable_progress_bar=cfg.enable_progress_bar and has_terminal(),
        deterministic=cfg.deterministic,
        # no_grad instead of inference_mode for eval: metric states reset under inference mode
        # become inference tensors and break the next fit (e.g. validate() before fit())
        inference_mode=False,
        default_root_dir=str(default_root_dir),
        logger=list(loggers) if loggers else False,
        plugins=[SafeCheckpointIO(checkpoint_dir, fingerprint)],
        # the training loaders shard themselves over ranks (data/loaders/resumable.py); an eval
        # loader is read whole by every rank
        use_distributed_sampler=False,
        callbacks=[
            checkpoint,
            RngState(),
            TokenThroughputMonitor(cfg.log_every_n_steps),
            *([ProgressLog(cfg.progress_every_seconds)] if not has_terminal() else []),
            *([CompileModel()] if cfg.compile else []),
            *callbacks,
        ],
    )


class FinalStepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that also saves the last step when max_steps is not a multiple of
    every_n_train_steps (Lightning alone would leave the final steps unsaved)."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # false when this step is saved already
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
        super().on_train_end(trainer, pl_module)
