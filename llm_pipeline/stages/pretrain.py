"""pretrain: pretrain one model family (any in llm_pipeline.families) with the one Lightning engine; register it.

One run per family (`llm-pipeline pretrain gpt`, i.e. `--set item=gpt`); dvc.yaml fans out over the `families` mapping.
Inputs : data/tokenize/<tokenizer>/ (shards, tokenizer.json, manifest); bert also reads
         ingest's nsp pairs
Outputs: data/pretrain/<family>/model.safetensors + model.json, tokenizer.json, manifest.json;
         reports/plots/pretrain-<family>_loss.tsv
Keeps  : data/checkpoints/pretrain-<family>/ (not a DVC out: a killed or retried run, `dvc repro`
         included, resumes from it; trainer.resume)

Multi-process strategies (ddp) re-execute this CLI once per rank; every rank trains, only
global rank zero writes outputs and talks to MLflow.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
from pydantic import Field, field_validator
from torch.utils.data import DataLoader

from llm_pipeline.config import DEFAULT_REGISTER_PREFIX, PerItemConfig, StageConfig
from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus
from llm_pipeline.data.tokenization.tokenizer import load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FAMILIES, FamilySpec, get_family
from llm_pipeline.io import (
    MANIFEST_NAME,
    atomic_path,
    build_manifest,
    describe_inputs,
    read_manifest,
    read_run_record,
    write_json,
    write_run_record,
)
from llm_pipeline.model_files import MODEL_CONFIG, MODEL_WEIGHTS, check_tokenizer, save_pretrained
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.checks import check_config_seq_len
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.client import is_global_rank_zero
from llm_pipeline.tracking.runs import Tracker
from llm_pipeline.training.callbacks import LossCurveWriter
from llm_pipeline.training.checkpointing import prepare_resume, training_fingerprint
from llm_pipeline.training.distributed import with_global_batch
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import Objective, SpanCorruption
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.throughput import TIMINGS, steady_throughput, training_compute
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)


class ModelChoice(StageConfig):
    preset: str = "small-cpu"  # a name from the family's presets (e.g. GPT_PRESETS in models/gpt.py)
    overrides: dict[str, int | float | bool | str] = Field(default_factory=dict)  # e.g. {n_layer: 6}


class FamilyConfig(StageConfig):
    """Everything one family's pretraining run needs; each family has its own block in params."""

    tokenizer: str  # folder name under tokenize_root: bpe | wordpiece | unigram
    model: ModelChoice = Field(default_factory=ModelChoice)
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    register_as: str | None = None  # MLflow registered model; default <register_prefix><family>


class PretrainConfig(PerItemConfig):
    ITEMS = "families"
    RENAMED = {"family": "item", "output_root": "output_dir"}
    families: dict[str, FamilyConfig]  # dvc.yaml runs one stage per key (registry names); `item` picks one
    tokenize_root: str = "data/tokenize"
    tasks_dir: str = "data/ingest/tasks"  # ingest's task tables; bert reads <tasks_dir>/nsp/
    output_dir: str = "data/pretrain"  # writes <output_dir>/<family>/
    checkpoint_root: str = "data/checkpoints"  # <checkpoint_root>/pretrain-<family>/: what a rerun resumes from
    plots_dir: str = "reports/plots"
    register_prefix: str = DEFAULT_REGISTER_PREFIX

    @field_validator("families")
    @classmethod
    def _registered(cls, families: dict[str, FamilyConfig]) -> dict[str, FamilyConfig]:
        unknown = [name for name in families if name not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown model families {unknown}; known families: {', '.join(FAMILIES)}")
        return families


@dataclass
class PretrainSetup:
    model: FamilyModel
    objective: Objective
    train_loader: DataLoader
    val_loader: DataLoader
    seq_len: int  # tokens per input sequence (gpt window, bert pair, t5 encoder input)
    tokenizer_manifest: dict[str, Any]


def build_pretrain_setup(
    spec: FamilySpec, tokenizer_dir: str | Path, fam: FamilyConfig, tasks_dir: str | Path = "data/ingest/tasks"
) -> PretrainSetup:
    """Model, objective and loaders for one family from `<tokenizer_dir>/{manifest.json, tokenizer.json, *.bin}`.

    Everything a user can get wrong (tokenizer kind, vocab size, sequence length, missing
    sentinels or special tokens) fails here with a PipelineError, before any training starts.
    """
    tokenizer_dir = Path(tokenizer_dir)
    manifest = read_manifest(tokenizer_dir)
    kind = manifest.get("tokenizer_kind")
    if kind is not None and kind != spec.tokenizer_kind:
        raise PipelineError(
            f"{tokenizer_dir / MANIFEST_NAME}: tokenizer_kind is {kind!r}, but {spec.name} "
            f"pretrains with a {spec.tokenizer_kind!r} tokenizer"
        )
    overrides = dict(fam.model.overrides)
    if "vocab_size" in overrides and overrides.pop("vocab_size") != manifest["vocab_size"]:
        raise PipelineError(
            f"{spec.name} model override vocab_size does not match the tokenizer's "
            f"vocab_size {manifest['vocab_size']}; leave it out, it is taken from the tokenizer"
        )
    if set(fam.data.objective_mix) - {"span_corruption"} and not isinstance(spec.objective(), SpanCorruption):
        raise PipelineError(
            f"families.{spec.name}.data.objective_mix: {spec.name} pretrains with {spec.objective().name}; "
            "the objective mix (prefix_lm, denoise) is for encoder-decoder families such as t5"
        )
    corpus = TokenizedCorpus(tokenizer_dir, manifest, load_tokenizer(tokenizer_dir / "tokenizer.json"), Path(tasks_dir))
    fixed = spec.tokenizer_fields(corpus.tokenizer, str(corpus.tokenizer_path))
    model = spec.build_model(fam.model.preset, manifest["vocab_size"], **{**fixed, **overrides})
    seq_len = spec.seq_len(model.config, fam.data.seq_len)
    check_config_seq_len(model.config, seq_len, "data.seq_len")
    train, val = spec.build_loaders(corpus, fam.data, seq_len)
    return PretrainSetup(model, spec.objective(), train, val, seq_len, manifest)


def run(cfg: PretrainConfig, tracker: Tracker) -> StageResult:
    family, fam = cfg.selected("pretrain")
    tokenizer_dir = Path(cfg.tokenize_root) / fam.tokenizer
    L.seed_everything(fam.trainer.seed, workers=True)  # before the model is built: its init draws from it
    setup = build_pretrain_setup(get_family(family), tokenizer_dir, fam, cfg.tasks_dir)
    shards = setup.tokenizer_manifest
    tokenizer_sha = check_tokenizer(
        tokenizer_dir / "tokenizer.json", shards["tokenizer_sha256"], f"the token shards in {tokenizer_dir}"
    )
    if fam.trainer.global_batch_tokens:
        fam = fam.model_copy(update={"trainer": with_global_batch(fam.trainer, fam.data.batch_size * setup.seq_len)})
    module = TrainingModule(setup.model, setup.objective, fam.optim.for_run(fam.trainer.max_steps))

    out = Path(cfg.output_dir) / family
    inputs = describe_inputs([tokenizer_dir / MANIFEST_NAME, tokenizer_dir / "tokenizer.json"])
    ingest_manifest = Path(cfg.tasks_dir).parent / MANIFEST_NAME  # new whenever ingest reruns (bert's nsp pairs)
    checkpoints = Path(cfg.checkpoint_root) / f"pretrain-{family}"
    run_fingerprint = training_fingerprint(
        fam.model_dump(), inputs + (describe_inputs([ingest_manifest]) if ingest_manifest.is_file() else [])
    )
    resume_from = prepare_resume(checkpoints, fam.trainer.resume, run_fingerprint, is_global_rank_zero())
    logger = tracker.lightning_logger()
    plots = Path(cfg.plots_dir) / f"pretrain-{family}_loss.tsv"
    trainer = build_trainer(
        fam.trainer,
        checkpoints,  # Lightning's root: nothing else is written there (the logger is MLflow's)
        loggers=[logger] if logger else [],
        callbacks=[LossCurveWriter(plots)],
        checkpoint_dir=checkpoints,
        fingerprint=run_fingerprint,
    )
    started = time.perf_counter()
    trainer.fit(module, setup.train_loader, setup.val_loader, ckpt_path=resume_from)
    seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return StageResult(metrics={})

    model = cast(FamilyModel, module.model.cpu().eval())  # setup.model: pretraining trains a family model
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics = {
        **val,
        "params": sum(p.numel() for p in model.parameters()),
        "steps": trainer.global_step,
        "seq_len": setup.seq_len,
        **training_compute(trainer),  # train_tokens, train_flops: the x axis of quality-vs-compute
        **steady_throughput(trainer),  # tokens_per_sec (+ mfu on a GPU): what bench/gpu.sh reads
        "train_seconds": seconds,
    }
    manifest = build_manifest(
        f"pretrain-{family}",
        inputs=inputs,
        outputs={"model": [MODEL_WEIGHTS, MODEL_CONFIG], "tokenizer": "tokenizer.json"},
        counts={k: v for k, v in metrics.items() if k not in TIMINGS},  # timings: the report's, not DVC's
        extra={
            "family": family,
            "model_config": model.config.to_dict(),
            "tokenizer": fam.tokenizer,
            "data": fam.data.model_dump(),  # evaluate builds its test batches the same way
            "tokenizer_sha256": tokenizer_sha,
            "checkpoints": str(checkpoints),
        },
    )
    with atomic_path(out) as tmp:  # published whole or not at all, as every stage's model folder
        tmp.mkdir(parents=True)
        save_pretrained(tmp, model, tokenizer_sha)
        # with its tokenizer the folder is self-contained: fine-tuning needs nothing from tokenize
        shutil.copyfile(tokenizer_dir / "tokenizer.json", tmp / "tokenizer.json")
        write_json(tmp / MANIFEST_NAME, manifest)
    upstream = read_run_record(tokenizer_dir)  # which tokenize run made the shards (lineage)
    write_run_record(
        out,
        mlflow_run_id=tracker.run_id,
        upstream_run_id=upstream.get("mlflow_run_id"),
        resumed_from=str(resume_from) if resume_from else None,  # the checkpoint this run resumed from
    )

    tracker.set_tags(
        {
            "model.family": family,
            "model.preset": fam.model.preset,
            "tokenizer": fam.tokenizer,
            "tokenizer_sha256": tokenizer_sha,
            "upstream.tokenize": str(upstream.get("mlflow_run_id")),
        }
    )
    name = fam.register_as or f"{cfg.register_prefix}{family}"
    summary = ", ".join(f"{k} {v:.3g}" for k, v in val.items())
    version = tracker.register_model(out, name, description=f"{family} {fam.model.preset}: {summary}")
    return StageResult(
        metrics=metrics,
        report={"family": family, "registered_model": name, "version": version},
        artifacts=[out / MANIFEST_NAME, plots],
    )
