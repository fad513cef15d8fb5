"""Multi-GPU and multi-node configuration, checked on CPU: the FSDP strategy we build, the
global batch under changing world sizes, and the cluster environment Lightning picks up from
torchrun's and SLURM's variables."""

import random

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from llm_pipeline.errors import PipelineError
from llm_pipeline.models.blocks import Block
from llm_pipeline.tracking.client import is_global_rank_zero
from llm_pipeline.training.distributed import (
    FSDPConfig,
    accumulation_for_global_batch,
    build_fsdp_strategy,
    with_global_batch,
    world_size,
)
from llm_pipeline.training.trainer import TrainerConfig, build_trainer, check_hardware

LAUNCH_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "TORCHELASTIC_RUN_ID",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_JOB_NAME",
    "SLURM_JOB_ID",
    "SLURM_NODELIST",
    "SLURM_CPUS_ON_NODE",
)


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("sharding", ["FULL_SHARD", "HYBRID_SHARD"])
def test_fsdp_wraps_each_block_and_checkpoints_its_activations_on_request(checkpointing, sharding):
    from torch.distributed.fsdp import ShardingStrategy

    strategy = build_fsdp_strategy(FSDPConfig(sharding_strategy=sharding, activation_checkpointing=checkpointing))
    assert strategy.sharding_strategy == ShardingStrategy[sharding]
    wrap = strategy.kwargs["auto_wrap_policy"]
    assert wrap._module_classes == {Block}
    assert (strategy._activation_checkpointing_kwargs != {}) == checkpointing
    if checkpointing:
        assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._state_dict_type == "full"  # checkpoints resume under any strategy


def test_fsdp_is_refused_in_one_line_without_gpus():
    with pytest.raises(PipelineError, match="shards the model over CUDA GPUs and this machine has none"):
        check_hardware(TrainerConfig(accelerator="cpu", devices=1, strategy="fsdp"))


@pytest.mark.parametrize(
    ("devices", "nodes", "processes"), [(1, 1, 1), (2, 1, 2), ("auto", 1, 1), (2, 3, 6), ("0,1", 2, 4)]
)
def test_world_size_is_devices_times_nodes(devices, nodes, processes):
    assert world_size(TrainerConfig(accelerator="cpu", devices=devices, num_nodes=nodes)) == processes


def test_the_global_batch_stays_when_the_device_count_changes():
    micro = 8 * 128  # batch 8 of 128 tokens
    assert [accumulation_for_global_batch(8192, micro, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(PipelineError, match=r"8192 is not a multiple .*1024 per process x 3 processes = 3072"):
        accumulation_for_global_batch(8192, micro, 3)
    cfg = TrainerConfig(accelerator="cpu", devices=2, num_nodes=2, global_batch_tokens=16384)
    assert with_global_batch(cfg, micro).accumulate_grad_batches == 4
    with pytest.raises(PipelineError, match="leave trainer.accumulate_grad_batches at 1"):
        with_global_batch(cfg.model_copy(update={"accumulate_grad_batches": 2}), micro)


def torchrun_variables(rank: int, local: int, node: int, nodes: int, per_node: int) -> dict:
    return {
        "RANK": rank,
        "LOCAL_RANK": local,
        "WORLD_SIZE": nodes * per_node,
        "LOCAL_WORLD_SIZE": per_node,
        "GROUP_RANK": node,
        "TORCHELASTIC_RUN_ID": "job",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29511",
    }


def slurm_variables(rank: int, local: int, node: int, nodes: int, per_node: int) -> dict:
    return {
        "SLURM_NTASKS": nodes * per_node,
        "SLURM_NTASKS_PER_NODE": per_node,
        "SLURM_PROCID": rank,
        "SLURM_LOCALID": local,
        "SLURM_NODEID": node,
        "SLURM_JOB_NAME": "llm-pipeline",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "node[1-4]",
    }


@pytest.mark.parametrize(
    ("launcher", "variables", "environment"),
    [("torchrun", torchrun_variables, TorchElasticEnvironment), ("slurm", slurm_variables, SLURMEnvironment)],
)
def test_launcher_variables_give_its_environment_ranks_and_world_size(
    no_launcher, tmp_path, launcher, variables, environment
):
    rng = random.Random(launcher)
    for _ in range(3):  # randomized nodes and ranks: a swapped local/node/global rank fails
        nodes, per_node = rng.randint(2, 4), 2
        node, local = rng.randrange(nodes), rng.randrange(per_node)
        rank = node * per_node + local
        for name, value in variables(rank, local, node, nodes, per_node).items():
            no_launcher.setenv(name, str(value))
        trainer = build_trainer(
            TrainerConfig(
                accelerator="cpu", devices=per_node, num_nodes=nodes, strategy="ddp", enable_progress_bar=False
            ),
            tmp_path,
        )
        assert isinstance(getattr(trainer.strategy, "cluster_environment", None), environment)
        assert (trainer.global_rank, trainer.local_rank, trainer.node_rank, trainer.world_size) == (
            rank,
            local,
            node,
            nodes * per_node,
        )
        # only rank zero tracks and writes
        assert trainer.is_global_zero == (rank == 0) == is_global_rank_zero()
