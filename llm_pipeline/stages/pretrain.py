"""pretrain: pretrain one model family (gpt | bert | t5) with the one Lightning engine; register it.

One run per family (`--set family=gpt`); dvc.yaml fans out over the `families` mapping.
Inputs : data/tokenize/<tokenizer>/ (shards, tokenizer.json, manifest); bert also reads
         ingest's nsp pairs
Outputs: data/pretrain/<family>/model.pt, checkpoints/, manifest.json;
         reports/plots/pretrain-<family>_loss.tsv

Multi-process strategies (ddp) re-execute this CLI once per rank; every rank trains, only
global rank zero writes outputs and talks to MLflow.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import lightning as L
from pydantic import Field

from llm_pipeline.checkpoints import check_tokenizer, save_pretrained
from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import MANIFEST_NAME, build_manifest, describe_inputs, write_json
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking import is_global_rank_zero
from llm_pipeline.training.callbacks import LossCurveWriter
from llm_pipeline.training.families import FamilyDataConfig, build_pretrain_setup
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.pretrain_module import PretrainModule
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)
Family = Literal["gpt", "bert", "t5"]


class ModelSpec(StageConfig):
    preset: str = "small-cpu"     # a name from llm_pipeline/models/presets.py
    overrides: dict[str, int | float | bool | str] = Field(default_factory=dict)  # e.g. {n_layer: 6}


class FamilyConfig(StageConfig):
    """Everything one family's pretraining run needs; each family has its own block in params."""

    tokenizer: str                                  # folder name under tokenize_root: bpe | wordpiece | unigram
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: FamilyDataConfig = Field(default_factory=FamilyDataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    register_as: str | None = None                  # MLflow registered model; default llm-pipeline-<family>


class PretrainConfig(StageConfig):
    families: dict[Family, FamilyConfig]            # dvc.yaml runs one stage per key
    family: Family | None = None                    # the one this run trains
    tokenize_root: str = "data/tokenize"
    output_root: str = "data/pretrain"              # writes <output_root>/<family>/
    plots_dir: str = "reports/plots"


def run(cfg: PretrainConfig, tracker) -> StageResult:
    family = cfg.family
    if family is None:
        raise PipelineError(f"pretrain: no family given; use --set family=<one of {', '.join(cfg.families)}>")
    if family not in cfg.families:
        raise PipelineError(f"pretrain: family {family!r} has no block under 'families' in the params "
                            f"(configured: {', '.join(cfg.families)})")
    fam = cfg.families[family]
    tokenizer_dir = Path(cfg.tokenize_root) / fam.tokenizer
    setup = build_pretrain_setup(family, tokenizer_dir, fam.model.preset, fam.model.overrides, fam.data)
    shards = setup.tokenizer_manifest
    tokenizer_sha = check_tokenizer(tokenizer_dir / "tokenizer.json", shards["tokenizer_sha256"],
                                    f"the token shards in {tokenizer_dir}")
    L.seed_everything(fam.trainer.seed, workers=True)
    module = PretrainModule(setup.model, setup.objective, fam.optim.for_run(fam.trainer.max_steps))

    out = Path(cfg.output_root) / family
    staging = out.with_name(f".{out.name}.partial")  # same name on every rank; renamed when done
    if is_global_rank_zero() and staging.exists():
        shutil.rmtree(staging)
    logger = tracker.lightning_logger()
    plots = Path(cfg.plots_dir) / f"pretrain-{family}_loss.tsv"
    trainer = build_trainer(fam.trainer, staging, loggers=[logger] if logger else [],
                            callbacks=[LossCurveWriter(plots)])
    started = time.perf_counter()
    trainer.fit(module, setup.train_loader, setup.val_loader)
    seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return StageResult(metrics={})

    model = module.model.cpu().eval()
    save_pretrained(staging / "model.pt", family, model, tokenizer_sha)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics = {**val, "params": sum(p.numel() for p in model.parameters()), "steps": trainer.global_step,
               "seq_len": setup.seq_len, "train_seconds": seconds}
    write_json(staging / MANIFEST_NAME, build_manifest(
        f"pretrain-{family}", inputs=describe_inputs([tokenizer_dir / MANIFEST_NAME, tokenizer_dir / "tokenizer.json"]),
        outputs={"model": "model.pt", "checkpoints": "checkpoints/"}, counts=metrics,
        extra={"family": family, "model_config": model.config.to_dict(), "tokenizer": fam.tokenizer,
               "tokenizer_sha256": tokenizer_sha, "upstream_run_id": shards.get("mlflow_run_id"),
               "mlflow_run_id": tracker.run_id}))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)

    tracker.set_tags({"model.family": family, "model.preset": fam.model.preset, "tokenizer": fam.tokenizer,
                      "tokenizer_sha256": tokenizer_sha, "upstream.tokenize": str(shards.get("mlflow_run_id"))})
    name = fam.register_as or f"llm-pipeline-{family}"
    summary = ", ".join(f"{k} {v:.3g}" for k, v in val.items())
    version = tracker.register_model(model, name, description=f"{family} {fam.model.preset}: {summary}")
    return StageResult(metrics=metrics, report={"family": family, "registered_model": name, "version": version},
                       artifacts=[out / MANIFEST_NAME, plots])
