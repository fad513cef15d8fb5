"""finetune: one (task, family) run of the matrix in params/finetune.yaml, from that family's pretrained model.

One run per key under `runs` (`llm-pipeline finetune summarization-t5`); dvc.yaml fans out over them, each
stage tracking only its own block, so adding a run retrains nothing else.
Inputs : <tasks_dir>/<task>/{train,val}.parquet; <pretrain_root>/<family>/ (model.safetensors,
         model.json, tokenizer.json, manifest.json)
Outputs: <output_dir>/<run>/model.safetensors + model.json (+ adapter.safetensors for LoRA),
         tokenizer.json, manifest.json; reports/plots/finetune-<run>_loss.tsv; registered as
         <register_prefix><task>-<family>
Keeps  : <checkpoint_root>/finetune-<run>/ (a killed or retried run resumes from it; trainer.resume)

The task's kind follows from its columns (data/tasks/loading.TASK_KINDS):
- classification: a linear head over the backbone's sequence vector (BERT [CLS], GPT last token);
- seq2seq: the family writes the target (registry `seq2seq_style`: T5 text-to-text, GPT prompted);
- generation: no train split; `method: none` registers the pretrained causal LM as the task's model.
The loss is the task's objective, run by the same TrainingModule and Trainer as pretraining.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn as nn
from pydantic import Field, field_validator, model_validator
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from llm_pipeline.config import DEFAULT_REGISTER_PREFIX, PerItemConfig, StageConfig, check_folder_names
from llm_pipeline.data.loaders.classification import build_classification_dataset, collate_classification
from llm_pipeline.data.loaders.config import build_eval_loader
from llm_pipeline.data.loaders.resumable import ResumableLoader
from llm_pipeline.data.loaders.seq2seq import Seq2SeqFormat, build_seq2seq_loader, encode_pairs_counted
from llm_pipeline.data.tasks.loading import load_task_split, task_kind
from llm_pipeline.data.tokenization.tokenizer import end_id, load_tokenizer, pad_id
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FamilySpec, get_family
from llm_pipeline.io import (
    MANIFEST_NAME,
    atomic_path,
    build_manifest,
    describe_inputs,
    read_run_record,
    write_json,
    write_run_record,
)
from llm_pipeline.model_files import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    check_tokenizer,
    load_pretrained,
    model_files,
    save_classifier,
    save_pretrained,
)
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.client import is_global_rank_zero
from llm_pipeline.tracking.registry import model_version_of_run
from llm_pipeline.tracking.runs import Tracker
from llm_pipeline.training.callbacks import LossCurveWriter
from llm_pipeline.training.checkpointing import prepare_resume, training_fingerprint
from llm_pipeline.training.lora import LoraConfig, apply_lora, count_parameters, lora_state_dict, merge_lora
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import Objective, SequenceClassification, text_to_text_objective
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.throughput import TIMINGS, training_compute
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)
Method = Literal["full", "lora", "none"]


class FinetuneRun(StageConfig):
    """One cell of the task x family matrix; each has its own block in params."""

    task: str  # a folder under tasks_dir (built-in or tasks.local)
    family: str  # a registered family; starts from <pretrain_root>/<family>/
    method: Method = "full"  # full: every weight trains; lora: adapters only; none: no training (generation)
    # scratch: the ablation that prices pretraining: the family's architecture and tokenizer with
    # freshly initialised weights, trained the same way; scored as <family>-scratch, not registered
    init: Literal["pretrained", "scratch"] = "pretrained"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    batch_size: int = Field(32, gt=0)
    max_len: int = Field(96, gt=0, description="classification: tokens kept from the head of each text")
    head_dropout: float = Field(0.1, ge=0, lt=1)
    format: Seq2SeqFormat = Field(default_factory=Seq2SeqFormat)  # seq2seq: templates and token budgets
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    register_as: str | None = None  # default <register_prefix><task>-<family>

    @field_validator("family")
    @classmethod
    def _registered(cls, family: str) -> str:
        get_family(family)  # one line naming the known families
        return family

    @model_validator(mode="after")
    def _scratch_trains_every_weight(self) -> FinetuneRun:
        # at load time, not at the run's start: a profile or matrix refuses it before any training
        if self.init == "scratch" and self.method != "full":
            raise ValueError(
                f"init: scratch trains a freshly initialised model; use method: full "
                f"(method {self.method} would leave random weights frozen)"
            )
        return self


class FinetuneConfig(PerItemConfig):
    ITEMS = "runs"
    RENAMED = {"run": "item", "output_root": "output_dir"}
    runs: dict[str, FinetuneRun]  # dvc.yaml runs finetune@<name> for every key; `item` picks one
    tasks_dir: str = "data/ingest/tasks"
    pretrain_root: str = "data/pretrain"  # <pretrain_root>/<family>/ holds the model + tokenizer.json
    output_dir: str = "data/finetune"  # writes <output_dir>/<run>/
    checkpoint_root: str = "data/checkpoints"  # <checkpoint_root>/finetune-<run>/: what a rerun resumes from
    plots_dir: str = "reports/plots"
    register_prefix: str = DEFAULT_REGISTER_PREFIX

    @field_validator("runs")
    @classmethod
    def _folder_names(cls, runs: dict[str, FinetuneRun]) -> dict[str, FinetuneRun]:
        check_folder_names(runs)
        return runs


@dataclass
class TaskSetup:
    """What training one run needs, built and checked before any training starts."""

    model: FamilyModel | SequenceClassifier
    objective: Objective
    train_loader: DataLoader
    val_loader: DataLoader
    trainable: tuple[str, ...] = ()  # parameters LoRA keeps trainable (a new head)
    meta: dict[str, Any] = field(default_factory=dict)  # what evaluate needs to use the model
    counts: dict[str, float] = field(default_factory=dict)


def check_pairing(name: str, spec: FinetuneRun, family: FamilySpec, kind: str) -> None:
    """Refuse, in one line, a family that cannot serve the task's kind or a method that cannot train it."""
    where = f"runs.{name}"
    if kind not in family.task_kinds:
        raise PipelineError(
            f"{where}: task {spec.task!r} is a {kind} task and {family.name} cannot serve it "
            f"({family.name} serves: {', '.join(family.task_kinds)})"
        )
    if kind == "generation" and spec.method != "none":
        raise PipelineError(
            f"{where}: task {spec.task!r} is a generation task with no train split; use method: none "
            "(the pretrained causal LM is its model)"
        )
    if kind != "generation" and spec.method == "none":
        raise PipelineError(f"{where}: method none trains nothing; use full or lora for a {kind} task")
    if spec.trainer.global_batch_tokens:
        raise PipelineError(
            f"{where}.trainer.global_batch_tokens: fine-tuning examples vary in length; "
            "set trainer.accumulate_grad_batches instead"
        )


def build_classification(spec: FinetuneRun, cfg: FinetuneConfig, backbone, tokenizer) -> TaskSetup:
    train_df = load_task_split(cfg.tasks_dir, spec.task, "train", ("text", "label"))
    val_df = load_task_split(cfg.tasks_dir, spec.task, "val", ("text", "label"))
    labels = sorted(train_df["label"].unique())
    max_len = min(spec.max_len, backbone.config.max_seq_len or spec.max_len)
    train_set, _ = build_classification_dataset(tokenizer, train_df, labels, max_len)
    val_set, val_unknown = build_classification_dataset(tokenizer, val_df, labels, max_len)
    collate = functools.partial(collate_classification, pad_id=pad_id(tokenizer))
    return TaskSetup(
        SequenceClassifier(backbone, len(labels), spec.head_dropout),
        SequenceClassification(),
        ResumableLoader(train_set, spec.batch_size, spec.trainer.seed, collate),
        build_eval_loader(val_set, spec.batch_size, collate),
        trainable=("head",),
        meta={"labels": labels, "max_len": max_len},
        counts={
            "train_examples": len(train_set),
            "val_examples": len(val_set),
            "val_unknown_label_examples": val_unknown,
            "num_labels": len(labels),
        },
    )


def build_seq2seq(spec: FinetuneRun, cfg: FinetuneConfig, model, tokenizer, family: FamilySpec) -> TaskSetup:
    style = family.seq2seq_style
    assert style is not None  # check_pairing: only writers get here
    fmt = spec.format
    block = model.config.max_seq_len
    if style == "prompted" and block and fmt.max_source_len + fmt.max_target_len > block:
        raise PipelineError(
            f"runs.{cfg.item}.format: max_source_len {fmt.max_source_len} + max_target_len {fmt.max_target_len} "
            f"exceed the {family.name} model's context of {block} tokens"
        )
    columns = ("input", "target", *[c for c in fmt.columns() if c not in ("input", "target")])
    frames = {s: load_task_split(cfg.tasks_dir, spec.task, s, columns) for s in ("train", "val")}
    stop = end_id(tokenizer)
    encoded = {
        s: encode_pairs_counted(tokenizer, f, fmt, style, stop, str(Path(cfg.tasks_dir) / spec.task / f"{s}.parquet"))
        for s, f in frames.items()
    }
    pairs = {s: e.pairs for s, e in encoded.items()}
    train, n_train = encoded["train"], max(len(encoded["train"].pairs), 1)
    dropped = 0
    if fmt.overlong == "drop":
        pairs["train"] = train.whole()
        dropped = len(train.pairs) - len(pairs["train"])
        if not pairs["train"]:
            raise PipelineError(
                f"runs.{cfg.item}.format: overlong: drop leaves no train pair within max_source_len "
                f"{fmt.max_source_len} and max_target_len {fmt.max_target_len}; raise them or use overlong: cut"
            )
        log.info("dropped %d of %d train pairs over the budgets (overlong: drop)", dropped, len(train.pairs))
    shares = {"source": train.sources_truncated / n_train, "target": train.targets_truncated / n_train}
    for side, share in shares.items():
        if share > 0.2 and fmt.overlong == "cut":
            key = f"max_{side}_len"
            log.info(
                "%.0f%% of the train %ss were cut to fit runs.%s.format.%s=%d; consider raising it",
                100 * share,
                side,
                cfg.item,
                key,
                getattr(fmt, key),
            )
    pad = pad_id(tokenizer)
    return TaskSetup(
        model,
        text_to_text_objective(style),
        build_seq2seq_loader(pairs["train"], style, pad, spec.batch_size, train=True, seed=spec.trainer.seed),
        build_seq2seq_loader(pairs["val"], style, pad, spec.batch_size, train=False),
        meta={"style": style, "format": fmt.model_dump(), "end_id": stop, "pad_id": pad},
        counts={
            "train_examples": len(pairs["train"]),
            "val_examples": len(pairs["val"]),
            **{f"train_{side}_truncated_share": share for side, share in shares.items()},
            **({"train_dropped_overlong": dropped} if fmt.overlong == "drop" else {}),
        },
    )


@dataclass
class TrainedRun:
    model: nn.Module  # LoRA already merged: a plain model of our classes
    meta: dict[str, Any]
    metrics: dict[str, float]
    adapter: dict[str, torch.Tensor] | None  # LoRA's trained tensors, before the merge


def train_run(
    cfg: FinetuneConfig,
    name: str,
    spec: FinetuneRun,
    kind: str,
    family: FamilySpec,
    backbone: FamilyModel,
    tokenizer,
    inputs: list[dict[str, Any]],
    plots: Path,
    tracker: Tracker,
) -> TrainedRun | None:
    """Build the task's model and loaders, train (resuming from its checkpoints), and hand back
    what rank zero saves; None on the other ranks of a multi-process run."""
    setup = (
        build_classification(spec, cfg, backbone.train(), tokenizer)
        if kind == "classification"
        else build_seq2seq(spec, cfg, backbone.train(), tokenizer, family)
    )
    if spec.method == "lora":
        apply_lora(setup.model, spec.lora, trainable=setup.trainable)
    metrics = {f"params/{k}": float(v) for k, v in count_parameters(setup.model).items()}
    module = TrainingModule(setup.model, setup.objective, spec.optim.for_run(spec.trainer.max_steps))
    checkpoints = Path(cfg.checkpoint_root) / f"finetune-{name}"
    run_fingerprint = training_fingerprint(spec.model_dump(), inputs)
    resume_from = prepare_resume(checkpoints, spec.trainer.resume, run_fingerprint, is_global_rank_zero())
    logger = tracker.lightning_logger()
    trainer = build_trainer(
        spec.trainer,
        checkpoints,  # Lightning's root: nothing else is written there (the logger is MLflow's)
        loggers=[logger] if logger else [],
        callbacks=[LossCurveWriter(plots)],
        checkpoint_dir=checkpoints,
        fingerprint=run_fingerprint,
    )
    trainer.fit(module, setup.train_loader, setup.val_loader, ckpt_path=resume_from)
    if not trainer.is_global_zero:
        return None
    adapter = None
    if spec.method == "lora":
        adapter = lora_state_dict(setup.model)
        merge_lora(setup.model)  # the saved model is a plain one of our classes
    metrics |= setup.counts | {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    metrics["steps"] = trainer.global_step
    metrics |= training_compute(trainer)  # train_tokens, train_flops: the x axis of quality-vs-compute
    meta = setup.meta | {"checkpoints": str(checkpoints), "resumed_from": str(resume_from) if resume_from else None}
    return TrainedRun(setup.model.cpu().eval(), meta, metrics, adapter)


def run(cfg: FinetuneConfig, tracker: Tracker) -> StageResult:
    name, spec = cfg.selected("finetune")
    family = get_family(spec.family)
    kind = task_kind(cfg.tasks_dir, spec.task)
    check_pairing(name, spec, family, kind)
    pretrained_dir = Path(cfg.pretrain_root) / spec.family
    L.seed_everything(spec.trainer.seed, workers=True)  # before a head is built: its init draws from it
    backbone, lm_meta = load_pretrained(pretrained_dir, family=spec.family)
    if spec.init == "scratch":  # same architecture and tokenizer, none of the pretrained weights
        backbone = family.model_from_config(lm_meta["config"], where=str(pretrained_dir))
    tokenizer_path = pretrained_dir / "tokenizer.json"
    tokenizer_sha = check_tokenizer(tokenizer_path, lm_meta["tokenizer_sha256"], f"the model {pretrained_dir}")
    tokenizer = load_tokenizer(tokenizer_path)

    out = Path(cfg.output_dir) / name
    plots = Path(cfg.plots_dir) / f"finetune-{name}_loss.tsv"
    inputs = describe_inputs([Path(cfg.tasks_dir) / spec.task, *model_files(pretrained_dir), tokenizer_path])
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    meta: dict[str, Any] = {}
    adapter: dict[str, torch.Tensor] | None = None
    if kind == "generation":
        model: nn.Module = backbone
        LossCurveWriter(plots).write()  # nothing trained: empty curves (header only), so dvc finds its plots
    else:
        trained = train_run(cfg, name, spec, kind, family, backbone, tokenizer, inputs, plots, tracker)
        if trained is None:  # a non-zero rank of a multi-process run: rank zero writes everything
            return StageResult(metrics={})
        model, meta, metrics, adapter = trained.model, trained.meta, trained.metrics, trained.adapter
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if adapter is not None:
            save_file(adapter, str(tmp / "adapter.safetensors"))
        if isinstance(model, SequenceClassifier):
            save_classifier(tmp, model, meta["labels"], meta["max_len"], tokenizer_sha)
        else:
            save_pretrained(tmp, model, tokenizer_sha)  # type: ignore[arg-type]  # a family model
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")  # the run folder is self-contained
        metrics["train_seconds"] = time.perf_counter() - started
        pretrain_run = read_run_record(pretrained_dir).get("mlflow_run_id")  # the run that made the backbone
        # a scratch run takes only the tokenizer (and architecture) from there: no weights lineage
        lineage = model_version_of_run(pretrain_run) if spec.init == "pretrained" else None
        write_json(
            tmp / MANIFEST_NAME,
            build_manifest(
                f"finetune-{name}",
                inputs=inputs,
                outputs={"model": [MODEL_WEIGHTS, MODEL_CONFIG], "tokenizer": "tokenizer.json"}
                | ({"adapter": "adapter.safetensors"} if spec.method == "lora" else {}),
                counts={k: v for k, v in metrics.items() if k not in TIMINGS},  # timings: the report's, not DVC's
                extra={
                    "run": name,
                    "task": spec.task,
                    "kind": kind,
                    "family": spec.family,
                    "method": spec.method,
                    "init": spec.init,
                    **{k: v for k, v in meta.items() if k != "resumed_from"},  # that: the run record's
                    "tokenizer_sha256": tokenizer_sha,
                },
            ),
        )
    write_run_record(
        out,
        mlflow_run_id=tracker.run_id,
        pretrain_run_id=pretrain_run,
        pretrained_model=f"{lineage[0]}/{lineage[1]}" if lineage else None,
        resumed_from=meta.get("resumed_from"),
    )

    tags = {
        "task": spec.task,
        "task.kind": kind,
        "model.family": spec.family,
        "finetune.method": spec.method,
        "finetune.init": spec.init,
        "tokenizer_sha256": tokenizer_sha,
        "upstream.pretrain": str(pretrain_run),
        "pretrained_model": f"{lineage[0]}/{lineage[1]}"
        if lineage
        else ("none" if spec.init == "scratch" else "unregistered"),
    }
    tracker.set_tags(tags)
    registered = spec.register_as or f"{cfg.register_prefix}{spec.task}-{spec.family}"
    headline = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items() if k.startswith("val/"))
    version = None  # a scratch run is an ablation to compare with, not a model to serve
    if spec.init == "pretrained":
        version = tracker.register_model(
            out,  # the saved folder: the registered pyfunc predicts from it
            registered,
            description=f"{spec.task} ({kind}) on {spec.family}, {spec.method}; from {tags['pretrained_model']}"
            + (f"; {headline}" if headline else ""),
            tags={
                k: v for k, v in tags.items() if k in ("task", "model.family", "finetune.method", "pretrained_model")
            },
        )
    return StageResult(
        metrics=metrics,
        report={
            "run": name,
            "task": spec.task,
            "family": spec.family,
            "registered_model": registered if version is not None else None,
            "version": version,
        },
        artifacts=[out / MANIFEST_NAME] + ([plots] if plots.is_file() else []),
    )
