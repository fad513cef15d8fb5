"""How training spreads over devices and nodes: the strategy object, the world size, the global batch.

Launchers: Lightning picks the cluster environment from the environment it is started in:
`torchrun` (TorchElasticEnvironment: RANK, LOCAL_RANK, WORLD_SIZE, ...), SLURM's `srun`
(SLURMEnvironment: SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_NTASKS, ...), or, started
plainly, Lightning's own launcher, which re-executes the stage CLI once per extra device.
See docs/training.md ("Scaling out") for the commands and `scripts/slurm/pretrain.sbatch`.

FSDP (`trainer.strategy: fsdp`, GPUs only): every transformer Block (the one block all three
families share, models/blocks.py) is its own FSDP unit and, with `trainer.fsdp.activation_checkpointing`,
recomputes its activations in the backward pass. Checkpoints use the full state dict, gathered on
rank zero, so they resume under any strategy and go through the same checksummed writer.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError
from llm_pipeline.models.blocks import Block

if TYPE_CHECKING:
    from lightning.pytorch.strategies import FSDPStrategy

    from llm_pipeline.training.trainer import TrainerConfig


class FSDPConfig(StageConfig):
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"] = Field(
        "FULL_SHARD", description="FULL_SHARD: parameters, gradients and optimizer state; HYBRID_SHARD: within a node"
    )
    activation_checkpointing: bool = Field(False, description="recompute each Block's activations in backward")
    cpu_offload: bool = Field(False, description="keep sharded parameters in CPU memory between uses")


def build_fsdp_strategy(fsdp: FSDPConfig) -> FSDPStrategy:
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if fsdp.activation_checkpointing else None,
        sharding_strategy=fsdp.sharding_strategy,
        cpu_offload=fsdp.cpu_offload,
        state_dict_type="full",
    )


def available_devices(accelerator: str) -> int | None:
    """How many devices `accelerator` has on this machine (None: not counted here, e.g. tpu)."""
    cuda = torch.cuda.device_count()
    mps = int(torch.backends.mps.is_available())
    if accelerator == "cpu":
        return os.cpu_count() or 1
    if accelerator == "cuda":
        return cuda
    if accelerator == "mps":
        return mps
    if accelerator == "gpu":
        return cuda or mps
    if accelerator == "auto":  # Lightning's pick: cuda, then mps, then cpu
        return cuda or mps or os.cpu_count() or 1
    return None


def world_size(cfg: TrainerConfig) -> int:
    """Processes the run will have: devices per node (as Lightning resolves `auto` and -1 here:
    every GPU, or 1 on a CPU-only machine) x nodes."""
    every = available_devices(cfg.accelerator) or 1  # what -1 means: every GPU, or every CPU core
    gpus = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    devices = cfg.devices
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            devices = every if gpus else 1  # Lightning's CPU "auto" is one process
        elif "," in text:
            devices = len([part for part in text.split(",") if part.strip()])
        else:
            devices = int(text)
    return (every if devices == -1 else int(devices)) * cfg.num_nodes


def accumulation_for_global_batch(
    global_batch_tokens: int, micro_batch_tokens: int, processes: int, where: str = "trainer.global_batch_tokens"
) -> int:
    """Micro-batches each process accumulates so one optimizer step sees `global_batch_tokens`."""
    per_step = micro_batch_tokens * processes
    if global_batch_tokens % per_step:
        raise PipelineError(
            f"{where} {global_batch_tokens} is not a multiple of the tokens one step of micro-batches "
            f"reads ({micro_batch_tokens} per process x {processes} processes = {per_step}); "
            f"use a multiple of {per_step}, or change the batch size"
        )
    return global_batch_tokens // per_step


def with_global_batch(cfg: TrainerConfig, micro_batch_tokens: int) -> TrainerConfig:
    """`cfg` with accumulate_grad_batches set from global_batch_tokens for this run's world size."""
    assert cfg.global_batch_tokens is not None
    if cfg.accumulate_grad_batches != 1:
        raise PipelineError(
            f"trainer.global_batch_tokens ({cfg.global_batch_tokens}) sets accumulate_grad_batches; "
            f"leave trainer.accumulate_grad_batches at 1 (it is {cfg.accumulate_grad_batches})"
        )
    steps = accumulation_for_global_batch(cfg.global_batch_tokens, micro_batch_tokens, world_size(cfg))
    return cfg.model_copy(update={"accumulate_grad_batches": steps})
