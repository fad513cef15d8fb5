"""evaluate: every model next to the baseline it must beat.

- language model: test-split perplexity vs an add-one unigram model fitted on train tokens
- each fine-tuned classifier: test accuracy and macro-F1 vs always predicting the majority label
- every pretrained family listed in `families`: its final validation metrics, read from the
  pretrain manifest (e.g. loss/ppl; MLM and NSP accuracy; span-corruption loss)
- a few sampled continuations of fixed prompts, to read

Writes reports/evaluate.json (through the stage runner); metric keys eval/<task>/<metric>.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import torch
from pydantic import AfterValidator, Field
from torch.utils.data import DataLoader

from llm_pipeline.checkpoints import check_tokenizer, load_classifier, load_pretrained
from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.classification import build_classification_dataset, collate_classification
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.data.tokenization.shards import load_shard
from llm_pipeline.data.tokenization.tokenizer import eot_id, load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.harness import (
    TextGenerator,
    compute_lm_perplexity,
    generate_continuations,
    predict_classes,
)
from llm_pipeline.evaluation.metrics import (
    compute_accuracy,
    compute_macro_f1,
    compute_majority_baseline,
    compute_unigram_perplexity,
)
from llm_pipeline.io import read_manifest
from llm_pipeline.registry import FAMILIES
from llm_pipeline.stages.base import StageResult
from llm_pipeline.training.objectives import CausalLM


def _non_blank(prompt: str) -> str:
    if not prompt.strip():
        raise ValueError("empty or whitespace-only prompt; give the text to continue or remove the entry")
    return prompt


class SamplingConfig(StageConfig):
    """Sampled continuations of fixed prompts, to read beside the numbers."""

    prompts: list[Annotated[str, AfterValidator(_non_blank)]] = Field(
        default_factory=lambda: ["In the beginning", "This package provides"]
    )
    max_new_tokens: int = Field(40, gt=0)
    temperature: float = Field(0.8, ge=0)
    top_k: int | None = 50
    seed: int = 1234


class EvaluateConfig(StageConfig):
    tokenize_dir: str = "data/tokenize/bpe"
    pretrained: str  # a causal LM's model.pt: test perplexity and samples
    tasks_dir: str = "data/ingest/tasks"
    finetune_root: str = "data/finetune"
    tasks: list[str] = Field(default_factory=lambda: ["classification"])
    pretrain_root: str = "data/pretrain"
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))  # val metrics of each pretrain
    batch_size: int = Field(32, gt=0)
    max_test_tokens: int | None = Field(None, gt=0, description="cap on test tokens scored (CPU time)")
    generation: SamplingConfig = Field(default_factory=SamplingConfig)


def load_test_tokens(cfg: EvaluateConfig, model, shards: dict) -> np.ndarray:
    """The test tokens to score (capped at max_test_tokens); at least one window of the model."""
    path = Path(cfg.tokenize_dir) / "test.bin"
    test: np.ndarray = load_shard(path, shards["dtype"])
    whole = len(test)
    if cfg.max_test_tokens:
        test = test[: cfg.max_test_tokens]
    block = model.config.max_seq_len
    if len(test) < block + 1:
        if len(test) < whole:
            raise PipelineError(
                f"{path}: max_test_tokens={cfg.max_test_tokens} keeps fewer tokens than one window of the model "
                f"({block + 1} = max_seq_len {block} + 1); set max_test_tokens to at least {block + 1} (or null)"
            )
        raise PipelineError(
            f"{path}: the test split has {whole} tokens, fewer than one window of the model "
            f"({block + 1} = max_seq_len {block} + 1); max_test_tokens cannot help, "
            "the test split is too small"
        )
    return test


def evaluate_lm(cfg: EvaluateConfig, model, shards: dict, test: np.ndarray | None = None) -> dict[str, float]:
    if test is None:
        test = load_test_tokens(cfg, model, shards)
    ppl, targets = compute_lm_perplexity(model, test, cfg.batch_size)
    train = load_shard(Path(cfg.tokenize_dir) / "train.bin", shards["dtype"])
    unigram = compute_unigram_perplexity(train, targets, shards["vocab_size"])
    return {
        "eval/lm/ppl": ppl,
        "eval/lm/unigram_ppl": unigram,
        "eval/lm/ppl_vs_unigram": ppl / unigram,
        "eval/lm/test_tokens": len(targets),
    }


@dataclass
class PreparedClassifier:
    """One fine-tuned classifier and its encoded test split, checked before any scoring runs."""

    task: str
    model: Any
    labels: list[str]
    test_set: Any
    unknown: int
    train_labels: list[str]


def _show(values, limit: int = 8) -> str:
    values = sorted(map(str, values))
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def prepare_classifier(cfg: EvaluateConfig, task: str, tokenizer) -> PreparedClassifier:
    model_path = Path(cfg.finetune_root) / task / "model.pt"
    model, meta = load_classifier(model_path)
    check_tokenizer(Path(cfg.tokenize_dir) / "tokenizer.json", meta["tokenizer_sha256"], str(model_path))
    labels = meta["labels"]
    test_df = load_task_split(cfg.tasks_dir, task, "test", ("text", "label"))
    train_df = load_task_split(cfg.tasks_dir, task, "train", ("text", "label"))
    test_set, unknown = build_classification_dataset(tokenizer, test_df, labels, meta["max_len"])
    if len(test_set) == 0:
        test_path = Path(cfg.tasks_dir) / task / "test.parquet"
        raise PipelineError(
            f"{test_path}: none of its {len(test_df)} examples has a label the model {model_path} "
            f"was trained on (test labels: {_show(set(test_df['label']))}; model labels: "
            f"{_show(labels)}); re-run ingest and finetune so both see the same labels"
        )
    return PreparedClassifier(task, model, labels, test_set, unknown, train_df["label"].tolist())


def score_classifier(cfg: EvaluateConfig, prepared: PreparedClassifier, tokenizer) -> dict[str, float]:
    task, labels = prepared.task, prepared.labels
    loader = DataLoader(
        prepared.test_set,
        batch_size=cfg.batch_size,
        collate_fn=functools.partial(collate_classification, pad_id=eot_id(tokenizer)),
    )
    preds, gold = predict_classes(prepared.model, loader)
    unknown = prepared.unknown
    index = {label: i for i, label in enumerate(labels)}
    baseline = compute_majority_baseline([index[x] for x in prepared.train_labels if x in index], gold, len(labels))
    prefix = f"eval/{task}"
    return {
        f"{prefix}/accuracy": compute_accuracy(preds, gold),
        f"{prefix}/macro_f1": compute_macro_f1(preds, gold, len(labels)),
        f"{prefix}/majority_accuracy": baseline["accuracy"],
        f"{prefix}/majority_macro_f1": baseline["macro_f1"],
        f"{prefix}/test_examples": len(gold),
        f"{prefix}/unknown_label_examples": unknown,
    }


def evaluate_classifier(cfg: EvaluateConfig, task: str, tokenizer) -> dict[str, float]:
    return score_classifier(cfg, prepare_classifier(cfg, task, tokenizer), tokenizer)


def check_prompts(gen: SamplingConfig, tokenizer) -> None:
    for i, prompt in enumerate(gen.prompts):
        if not tokenizer.encode(prompt, add_special_tokens=False).ids:
            raise PipelineError(
                f"generation.prompts.{i}: {prompt!r} tokenizes to nothing; give text the tokenizer knows"
            )


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
    model, meta = load_pretrained(cfg.pretrained)
    if FAMILIES[meta["family"]].objective is not CausalLM:
        raise PipelineError(
            f"{cfg.pretrained}: a {meta['family']} model; evaluate's `pretrained` must be a causal "
            f"LM ({', '.join(n for n, s in FAMILIES.items() if s.objective is CausalLM)}) "
            "for test perplexity and samples"
        )
    check_tokenizer(tokenizer_path, meta["tokenizer_sha256"], f"the model {cfg.pretrained}")
    check_tokenizer(tokenizer_path, shards["tokenizer_sha256"], f"the token shards in {cfg.tokenize_dir}")
    tokenizer = load_tokenizer(tokenizer_path)

    # every input is checked before any scoring: a bad classifier split fails in seconds, not after perplexity
    check_prompts(cfg.generation, tokenizer)
    test = load_test_tokens(cfg, model, shards)
    classifiers = [prepare_classifier(cfg, task, tokenizer) for task in cfg.tasks]
    family_metrics = collect_family_metrics(cfg)

    metrics = evaluate_lm(cfg, model, shards, test) | family_metrics
    for prepared in classifiers:
        metrics |= score_classifier(cfg, prepared, tokenizer)
    gen = cfg.generation
    samples = generate_continuations(
        cast(TextGenerator, model),  # a causal LM (checked above), and those generate
        tokenizer,
        gen.prompts,
        gen.max_new_tokens,
        gen.temperature,
        gen.top_k,
        eot_id(tokenizer),
        gen.seed,
    )
    return StageResult(metrics=metrics, report={"generations": samples})
