"""evaluate: every model next to the baseline it must beat.

- language model: test-split perplexity vs an add-one unigram model fitted on train tokens
- each fine-tuned classifier: test accuracy and macro-F1 vs always predicting the majority label
- every pretrained family (gpt, bert, t5): its final validation metrics, read from the
  pretrain manifest (loss/ppl; bert MLM and NSP accuracy; t5 span-corruption loss)
- a few sampled continuations of fixed prompts, to read

Writes reports/evaluate.json (through the stage runner); metric keys eval/<task>/<metric>.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from pydantic import Field
from torch.utils.data import DataLoader

from llm_pipeline.checkpoints import check_tokenizer, load_classifier, load_lm
from llm_pipeline.config import StageConfig
from llm_pipeline.data.shards import load_shard
from llm_pipeline.data.task_data import build_classification_dataset, load_task_split
from llm_pipeline.data.text_classification import collate_classification
from llm_pipeline.data.tokenizer import eot_id, load_tokenizer
from llm_pipeline.evaluation.harness import compute_lm_perplexity, generate_continuations, predict_classes
from llm_pipeline.evaluation.metrics import (compute_accuracy, compute_macro_f1, compute_majority_baseline,
                                             compute_unigram_perplexity)
from llm_pipeline.io import read_manifest
from llm_pipeline.stages.base import StageResult


class GenerationConfig(StageConfig):
    prompts: list[str] = Field(default_factory=lambda: ["In the beginning", "This package provides"])
    max_new_tokens: int = Field(40, gt=0)
    temperature: float = Field(0.8, ge=0)
    top_k: int | None = 50
    seed: int = 1234


class EvaluateConfig(StageConfig):
    tokenize_dir: str = "data/tokenize/bpe"
    pretrained: str = "data/pretrain/gpt/model.pt"
    tasks_dir: str = "data/ingest/tasks"
    finetune_root: str = "data/finetune"
    tasks: list[str] = Field(default_factory=lambda: ["classification"])
    pretrain_root: str = "data/pretrain"
    families: list[str] = Field(default_factory=lambda: ["gpt", "bert", "t5"])
    batch_size: int = Field(32, gt=0)
    max_test_tokens: int | None = Field(None, gt=0, description="cap on test tokens scored (CPU time)")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)


def evaluate_lm(cfg: EvaluateConfig, model, shards: dict) -> dict[str, float]:
    test = load_shard(Path(cfg.tokenize_dir) / "test.bin", shards["dtype"])
    if cfg.max_test_tokens:
        test = test[: cfg.max_test_tokens]
    ppl, targets = compute_lm_perplexity(model, test, cfg.batch_size)
    train = load_shard(Path(cfg.tokenize_dir) / "train.bin", shards["dtype"])
    unigram = compute_unigram_perplexity(train, targets, shards["vocab_size"])
    return {"eval/lm/ppl": ppl, "eval/lm/unigram_ppl": unigram,
            "eval/lm/ppl_vs_unigram": ppl / unigram, "eval/lm/test_tokens": len(targets)}


def evaluate_classifier(cfg: EvaluateConfig, task: str, tokenizer) -> dict[str, float]:
    model_path = Path(cfg.finetune_root) / task / "model.pt"
    model, meta = load_classifier(model_path)
    check_tokenizer(Path(cfg.tokenize_dir) / "tokenizer.json", meta["tokenizer_sha256"], str(model_path))
    labels = meta["labels"]
    test_df = load_task_split(cfg.tasks_dir, task, "test", ("text", "label"))
    train_df = load_task_split(cfg.tasks_dir, task, "train", ("text", "label"))
    test_set, unknown = build_classification_dataset(tokenizer, test_df, labels, meta["max_len"])
    loader = DataLoader(test_set, batch_size=cfg.batch_size,
                        collate_fn=functools.partial(collate_classification, pad_id=eot_id(tokenizer)))
    preds, gold = predict_classes(model, loader)
    index = {label: i for i, label in enumerate(labels)}
    baseline = compute_majority_baseline([index[x] for x in train_df["label"] if x in index], gold, len(labels))
    prefix = f"eval/{task}"
    return {f"{prefix}/accuracy": compute_accuracy(preds, gold),
            f"{prefix}/macro_f1": compute_macro_f1(preds, gold, len(labels)),
            f"{prefix}/majority_accuracy": baseline["accuracy"],
            f"{prefix}/majority_macro_f1": baseline["macro_f1"],
            f"{prefix}/test_examples": len(gold), f"{prefix}/unknown_label_examples": unknown}


def collect_family_metrics(cfg: EvaluateConfig) -> dict[str, float]:
    """eval/<family>/val_<metric> from each family's pretrain manifest (its last full validation)."""
    metrics = {}
    for family in cfg.families:
        counts = read_manifest(Path(cfg.pretrain_root) / family)["counts"]
        for key, value in counts.items():
            if key.startswith("val/"):
                metrics[f"eval/{family}/val_{key.removeprefix('val/')}"] = value
    return metrics


def run(cfg: EvaluateConfig, tracker) -> StageResult:
    torch.manual_seed(cfg.generation.seed)
    shards = read_manifest(cfg.tokenize_dir)
    tokenizer_path = Path(cfg.tokenize_dir) / "tokenizer.json"
    model, meta = load_lm(cfg.pretrained)
    check_tokenizer(tokenizer_path, meta["tokenizer_sha256"], f"the model {cfg.pretrained}")
    check_tokenizer(tokenizer_path, shards["tokenizer_sha256"], f"the token shards in {cfg.tokenize_dir}")
    tokenizer = load_tokenizer(tokenizer_path)

    metrics = evaluate_lm(cfg, model, shards) | collect_family_metrics(cfg)
    for task in cfg.tasks:
        metrics |= evaluate_classifier(cfg, task, tokenizer)
    gen = cfg.generation
    samples = generate_continuations(model, tokenizer, gen.prompts, gen.max_new_tokens, gen.temperature,
                                     gen.top_k, eot_id(tokenizer), gen.seed)
    return StageResult(metrics=metrics, report={"generations": samples})
