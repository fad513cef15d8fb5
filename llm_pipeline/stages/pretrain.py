"""pretrain: train the GPT-style decoder on the token shards with Lightning; register it.

Inputs : data/tokenize/bpe/{train,val}.bin + manifest, data/tokenize/bpe/tokenizer.json
Outputs: data/pretrain/model.pt, checkpoints/, manifest.json; reports/plots/pretrain_loss*.tsv

Multi-process strategies (ddp) re-execute this CLI once per rank; every rank trains, only
global rank zero writes outputs and talks to MLflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import lightning as L
from pydantic import Field

from llm_pipeline.checkpoints import check_tokenizer, save_lm
from llm_pipeline.config import StageConfig
from llm_pipeline.data.token_data import build_lm_dataloaders
from llm_pipeline.io import MANIFEST_NAME, build_manifest, describe_inputs, read_manifest, write_json
from llm_pipeline.models.presets import build_gpt_config
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking import is_global_rank_zero
from llm_pipeline.training.callbacks import LossCurveWriter
from llm_pipeline.training.lm_module import CausalLMModule
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)


class ModelSpec(StageConfig):
    preset: str = "small-cpu"     # a name from llm_pipeline/models/presets.py
    overrides: dict[str, int | float | bool] = Field(default_factory=dict)  # e.g. {n_layer: 6}


class PretrainConfig(StageConfig):
    data_dir: str = "data/tokenize/bpe"                 # token shards + manifest
    tokenizer: str = "data/tokenize/bpe/tokenizer.json" # must be the one the shards were made with
    output_dir: str = "data/pretrain"
    model: ModelSpec = Field(default_factory=ModelSpec)
    batch_size: int = Field(32, gt=0, description="sequences per device per micro-batch")
    num_workers: int = Field(0, ge=0)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    register_as: str = "llm-pipeline-gpt"               # MLflow registered model name
    plots_path: str = "reports/plots/pretrain_loss.tsv"


def run(cfg: PretrainConfig, tracker) -> StageResult:
    shards = read_manifest(cfg.data_dir)
    tokenizer_sha = check_tokenizer(cfg.tokenizer, shards["tokenizer_sha256"], f"the token shards in {cfg.data_dir}")
    L.seed_everything(cfg.trainer.seed, workers=True)

    model_config = build_gpt_config(cfg.model.preset, shards["vocab_size"], **cfg.model.overrides)
    train_loader, val_loader = build_lm_dataloaders(
        cfg.data_dir, shards["dtype"], model_config.block_size, cfg.batch_size, cfg.num_workers,
        samples_per_epoch=cfg.trainer.max_steps * cfg.batch_size * cfg.trainer.accumulate_grad_batches)
    optim = cfg.optim.for_run(cfg.trainer.max_steps)
    module = CausalLMModule(model_config, optim)

    out = Path(cfg.output_dir)
    staging = out.with_name(f".{out.name}.partial")  # same name on every rank; renamed when done
    if is_global_rank_zero() and staging.exists():
        shutil.rmtree(staging)
    logger = tracker.lightning_logger()
    trainer = build_trainer(cfg.trainer, staging, loggers=[logger] if logger else [],
                            callbacks=[LossCurveWriter(cfg.plots_path)])
    started = time.perf_counter()
    trainer.fit(module, train_loader, val_loader)
    seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return StageResult(metrics={})

    model = module.model.cpu().eval()
    save_lm(staging / "model.pt", model, tokenizer_sha)
    tokens_seen = (trainer.global_step * cfg.batch_size * cfg.trainer.accumulate_grad_batches
                   * model_config.block_size * trainer.world_size)
    metrics = {
        "val/loss": float(trainer.callback_metrics["val/loss"]),
        "val/ppl": float(trainer.callback_metrics["val/ppl"]),
        "train/loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
        "params": model.num_parameters(),
        "steps": trainer.global_step,
        "tokens_seen": tokens_seen,
        "train_seconds": seconds,
        "tokens_per_second": tokens_seen / seconds,
    }
    write_json(staging / MANIFEST_NAME, build_manifest(
        "pretrain", inputs=describe_inputs([Path(cfg.data_dir) / MANIFEST_NAME, cfg.tokenizer]),
        outputs={"model": "model.pt", "checkpoints": "checkpoints/"}, counts=metrics,
        extra={"model_config": model_config.to_dict(), "tokenizer_sha256": tokenizer_sha,
               "upstream_run_id": shards.get("mlflow_run_id"), "mlflow_run_id": tracker.run_id}))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)

    tracker.set_tags({"model.family": "gpt", "tokenizer_sha256": tokenizer_sha,
                      "upstream.tokenize": str(shards.get("mlflow_run_id"))})
    version = tracker.register_model(model, cfg.register_as,
                                     description=f"GPT {cfg.model.preset}, val ppl {metrics['val/ppl']:.1f}")
    return StageResult(metrics=metrics, report={"registered_model": cfg.register_as, "version": version},
                       artifacts=[out / MANIFEST_NAME, Path(cfg.plots_path)])
