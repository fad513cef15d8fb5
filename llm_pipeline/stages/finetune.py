"""finetune: start from a pretrained model of any family, add a task head, train on a downstream task.

One run per task (`--set task=classification`); dvc.yaml fans out over `tasks`.
Inputs : <tasks_dir>/<task>/{train,val}.parquet, the `pretrained` model file, its `tokenizer`
Outputs: <output_root>/<task>/model.pt + manifest.json; registered as <register_prefix><task>
The loss is the task's objective, run by the same TrainingModule and Trainer as pretraining.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from pathlib import Path

import lightning as L
from pydantic import Field
from torch.utils.data import DataLoader

from llm_pipeline.checkpoints import check_tokenizer, load_pretrained, save_classifier
from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.classification import build_classification_dataset, collate_classification
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.data.tokenization.tokenizer import eot_id, load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import MANIFEST_NAME, atomic_path, build_manifest, describe_inputs, write_json
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.stages.base import StageResult
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import SequenceClassification
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)
SUPPORTED_TASKS = ("classification",)


class FinetuneConfig(StageConfig):
    tasks: list[str] = Field(default_factory=lambda: ["classification"])  # dvc.yaml fans out over these
    task: str | None = None  # the one this run trains
    tasks_dir: str = "data/ingest/tasks"
    pretrained: str  # a pretrain stage's model.pt (any family)
    tokenizer: str  # the tokenizer.json that model was trained with
    output_root: str = "data/finetune"  # writes <output_root>/<task>/
    max_len: int = Field(128, gt=0, description="tokens kept from the head of each text")
    batch_size: int = Field(32, gt=0)
    head_dropout: float = Field(0.1, ge=0, lt=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    register_prefix: str = "llm-pipeline-"  # registered as <prefix><task>


def run(cfg: FinetuneConfig, tracker) -> StageResult:
    task = cfg.task
    if task is None:
        raise PipelineError("finetune: no task given; use --set task=<name> (one of params 'tasks')")
    if task not in SUPPORTED_TASKS:
        raise PipelineError(f"finetune: task {task!r} is not supported yet (supported: {SUPPORTED_TASKS})")
    L.seed_everything(cfg.trainer.seed, workers=True)  # before the head is built: its init draws from it
    backbone, lm_meta = load_pretrained(cfg.pretrained)
    tokenizer_sha = check_tokenizer(cfg.tokenizer, lm_meta["tokenizer_sha256"], f"the model {cfg.pretrained}")
    tokenizer = load_tokenizer(cfg.tokenizer)

    train_df = load_task_split(cfg.tasks_dir, task, "train", ("text", "label"))
    val_df = load_task_split(cfg.tasks_dir, task, "val", ("text", "label"))
    labels = sorted(train_df["label"].unique())
    max_len = min(cfg.max_len, backbone.config.max_seq_len or cfg.max_len)
    train_set, _ = build_classification_dataset(tokenizer, train_df, labels, max_len)
    val_set, val_unknown = build_classification_dataset(tokenizer, val_df, labels, max_len)
    collate = functools.partial(collate_classification, pad_id=eot_id(tokenizer))
    train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, collate_fn=collate)

    optim = cfg.optim.for_run(cfg.trainer.max_steps)
    classifier = SequenceClassifier(backbone.train(), len(labels), cfg.head_dropout)
    module = TrainingModule(classifier, SequenceClassification(), optim)

    out = Path(cfg.output_root) / task
    logger = tracker.lightning_logger()
    started = time.perf_counter()
    with atomic_path(out) as tmp:
        trainer = build_trainer(cfg.trainer, tmp, loggers=[logger] if logger else [])
        trainer.fit(module, train_loader, val_loader)
        model = classifier.cpu().eval()
        save_classifier(tmp / "model.pt", model, labels, max_len, tokenizer_sha)
        metrics = {
            "val/loss": float(trainer.callback_metrics["val/loss"]),
            "val/acc": float(trainer.callback_metrics["val/acc"]),
            "steps": trainer.global_step,
            "train_examples": len(train_set),
            "val_examples": len(val_set),
            "val_unknown_label_examples": val_unknown,
            "num_labels": len(labels),
            "train_seconds": time.perf_counter() - started,
        }
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)  # model.pt is the output; keep the out small
        write_json(
            tmp / MANIFEST_NAME,
            build_manifest(
                f"finetune-{task}",
                inputs=describe_inputs([Path(cfg.tasks_dir) / task, cfg.pretrained, cfg.tokenizer]),
                outputs={"model": "model.pt"},
                counts=metrics,
                extra={"labels": labels, "tokenizer_sha256": tokenizer_sha, "mlflow_run_id": tracker.run_id},
            ),
        )

    tracker.set_tags({"task": task, "model.family": lm_meta["family"], "tokenizer_sha256": tokenizer_sha})
    version = tracker.register_model(
        model,
        f"{cfg.register_prefix}{task}",
        description=f"{task}: {len(labels)} labels, val acc {metrics['val/acc']:.3f}",
    )
    return StageResult(metrics=metrics, report={"labels": labels, "version": version}, artifacts=[out / MANIFEST_NAME])
