"""Score fine-tuned runs on their task's test split, beside the task's baselines, into a Scoreboard.

One function per task kind (data/tasks/loading.TASK_KINDS). A task's baselines are scored once,
on exactly the test examples its models are scored on, however many families serve the task.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from pydantic import Field
from torch.utils.data import DataLoader

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.classification import build_classification_dataset, collate_classification
from llm_pipeline.data.loaders.seq2seq import Seq2SeqFormat, encode_pairs, format_rows
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.data.tokenization.tokenizer import load_tokenizer, unk_rate
from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.baselines import BigramLM
from llm_pipeline.evaluation.harness import compute_continuation_perplexity
from llm_pipeline.evaluation.metrics import (
    compute_accuracy,
    compute_macro_f1,
    compute_majority_baseline,
    compute_unigram_perplexity,
)
from llm_pipeline.evaluation.scoreboard import Scoreboard
from llm_pipeline.evaluation.suites import BASELINES, TaskSuite
from llm_pipeline.evaluation.text_metrics import compute_distinct_n, compute_repetition_rate
from llm_pipeline.io import read_manifest
from llm_pipeline.model_files import check_tokenizer, load_classifier, load_pretrained
from llm_pipeline.prediction import decode_texts, predict_classes


class DecodingConfig(StageConfig):
    """How seq2seq test outputs are decoded (deterministic: beam search, or greedy at width 1)."""

    num_beams: int = Field(4, ge=1)
    length_penalty: float = 1.0  # score / length**penalty: > 0 favours longer outputs
    no_repeat_ngram_size: int = Field(0, ge=0)  # n > 0: no output repeats one of its own n-grams
    max_new_tokens: int = Field(32, gt=0)
    batch_size: int = Field(16, gt=0)


class GenerationConfig(StageConfig):
    """Generation tasks: perplexity of the real continuation, and sampled continuations."""

    max_new_tokens: int = Field(40, gt=0)
    max_continuation_tokens: int = Field(64, gt=0, description="real continuation tokens scored")
    max_samples: int = Field(100, gt=0, description="prompts sampled from, for distinct-n and repetition")
    temperature: float = Field(0.8, gt=0)
    top_k: int | None = 50
    seed: int = 1234


@dataclass
class FinetunedRun:
    """A finetune output folder, loaded: its model, tokenizer and what the run recorded."""

    name: str
    folder: Path
    manifest: dict[str, Any]
    model: Any
    tokenizer: Any

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def family(self) -> str:
        return self.manifest["family"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]


def load_run(folder: Path) -> FinetunedRun:
    manifest = read_manifest(folder)
    tokenizer_path = folder / "tokenizer.json"
    check_tokenizer(tokenizer_path, manifest["tokenizer_sha256"], f"the model {folder}")
    model: nn.Module
    if manifest["kind"] == "classification":
        model, _ = load_classifier(folder)
    else:
        model, _ = load_pretrained(folder, family=manifest["family"])
    return FinetunedRun(folder.name, folder, manifest, model.eval(), load_tokenizer(tokenizer_path))


def sample_rows(frame: pd.DataFrame, max_examples: int | None, seed: int) -> pd.DataFrame:
    """A fixed random subset (the same for every system of a task), in a stable order."""
    if max_examples is None or len(frame) <= max_examples:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_examples, random_state=seed).reset_index(drop=True)


def score_classification(board: Scoreboard, run: FinetunedRun, tasks_dir: str, batch_size: int) -> None:
    labels = run.manifest["labels"]
    test_df = load_task_split(tasks_dir, run.task, "test", ("text", "label"))
    test_set, unknown = build_classification_dataset(run.tokenizer, test_df, labels, run.manifest["max_len"])
    if len(test_set) == 0:
        raise PipelineError(
            f"{Path(tasks_dir) / run.task / 'test.parquet'}: none of its {len(test_df)} examples has a label "
            f"the model {run.folder} was trained on (test labels: {_show(set(test_df['label']))}; model labels: "
            f"{_show(labels)}); re-run ingest and finetune so both see the same labels"
        )
    collate = functools.partial(collate_classification, pad_id=0)  # masked: any pad id works
    preds, gold = predict_classes(run.model, DataLoader(test_set, batch_size=batch_size, collate_fn=collate))
    board.primary[run.task] = "macro_f1"
    board.add(
        "downstream",
        run.task,
        run.family,
        "model",
        {
            "accuracy": compute_accuracy(preds, gold),
            "macro_f1": compute_macro_f1(preds, gold, len(labels)),
            "test_examples": len(gold),
            "unknown_label_examples": unknown,
        },
    )
    if not _scored(board, run.task, "majority"):
        index = {label: i for i, label in enumerate(labels)}
        train = load_task_split(tasks_dir, run.task, "train", ("text", "label"))["label"]
        board.add(
            "downstream",
            run.task,
            "majority",
            "baseline",
            compute_majority_baseline([index[x] for x in train if x in index], gold, len(labels)),
        )


def score_seq2seq(
    board: Scoreboard,
    run: FinetunedRun,
    tasks_dir: str,
    suite: TaskSuite,
    decoding: DecodingConfig,
    max_examples: int | None,
    seed: int,
    n_examples: int,
) -> None:
    fmt = Seq2SeqFormat(**run.manifest["format"])
    extra = [c for c in [*fmt.columns(), *([suite.by] if suite.by else [])] if c not in ("input", "target")]
    test = sample_rows(load_task_split(tasks_dir, run.task, "test", ("input", "target", *extra)), max_examples, seed)
    where = str(Path(tasks_dir) / run.task / "test.parquet")
    style = run.manifest["style"]
    pairs = encode_pairs(run.tokenizer, test, fmt, style, run.manifest["end_id"], where)
    predictions = decode_texts(
        run.model,
        run.tokenizer,
        [p.source for p in pairs],
        style,
        pad_id=run.manifest["pad_id"],
        end_id=run.manifest["end_id"],
        max_new_tokens=decoding.max_new_tokens,
        batch_size=decoding.batch_size,
        num_beams=decoding.num_beams,
        length_penalty=decoding.length_penalty,
        no_repeat_ngram_size=decoding.no_repeat_ngram_size,
    )
    references = test["target"].tolist()
    board.primary[run.task] = suite.primary_metric
    board.add(
        "downstream",
        run.task,
        run.family,
        "model",
        _suite_scores(suite, test, predictions, references)
        | {"test_examples": len(test), "target_unk_rate": unk_rate(run.tokenizer, references)},
    )
    board.examples.setdefault(run.task, []).extend(
        {"family": run.family, "input": src, "reference": ref, "prediction": pred}
        for src, ref, pred in list(zip(format_rows(test, fmt.input_template, where), references, predictions))[
            :n_examples
        ]
    )
    train = load_task_split(tasks_dir, run.task, "train", ("input", "target"))
    for name in suite.baselines:
        if _scored(board, run.task, name):
            continue
        guesses = BASELINES[name](train["input"].tolist(), train["target"].tolist(), test["input"].tolist())
        board.add("downstream", run.task, name, "baseline", _suite_scores(suite, test, guesses, references))


def _suite_scores(suite: TaskSuite, test: pd.DataFrame, predictions: list[str], references: list[str]):
    """The suite's metrics over all examples, and per value of `suite.by` (e.g. bleu_de)."""
    scores = suite.score(predictions, references)
    if suite.by:
        for value, rows in test.groupby(suite.by, sort=True).indices.items():
            part = suite.score([predictions[i] for i in rows], [references[i] for i in rows])
            scores |= {f"{metric}_{value}": v for metric, v in part.items()}
    return scores


def score_generation(
    board: Scoreboard,
    run: FinetunedRun,
    tasks_dir: str,
    gen: GenerationConfig,
    train_tokens: np.ndarray,
    vocab_size: int,
    max_examples: int | None,
    batch_size: int,
) -> None:
    """Perplexity of the real continuation vs unigram/bigram models of the train tokens; the
    diversity of sampled continuations (distinct-1/2, repetition) beside the real text's."""
    test = sample_rows(load_task_split(tasks_dir, run.task, "test", ("prompt", "continuation")), max_examples, 0)
    tok = run.tokenizer
    prompts = [e.ids for e in tok.encode_batch(test["prompt"].tolist(), add_special_tokens=False)]
    continuations = [
        e.ids[: gen.max_continuation_tokens]
        for e in tok.encode_batch(test["continuation"].tolist(), add_special_tokens=False)
    ]
    pairs = [(p, c) for p, c in zip(prompts, continuations, strict=True) if p and c]
    board.primary[run.task] = "ppl"
    ppl = compute_continuation_perplexity(run.model, pairs, batch_size)
    generator = torch.Generator().manual_seed(gen.seed)
    samples = []
    for prompt, _ in pairs[: gen.max_samples]:
        out = run.model.generate(
            torch.tensor([prompt[-(run.model.config.max_seq_len - gen.max_new_tokens) :]]),
            gen.max_new_tokens,
            temperature=gen.temperature,
            top_k=gen.top_k,
            generator=generator,
        )
        samples.append(tok.decode(out[0].tolist()))
    real = [tok.decode(c) for _, c in pairs[: gen.max_samples]]
    diversity = {
        "distinct_1": compute_distinct_n(samples, 1),
        "distinct_2": compute_distinct_n(samples, 2),
        "repetition_rate": compute_repetition_rate(samples),
    }
    board.add("downstream", run.task, run.family, "model", {"ppl": ppl, "test_examples": len(pairs)} | diversity)
    board.examples.setdefault(run.task, []).extend(
        {"family": run.family, "input": test["prompt"][i], "reference": real[i], "prediction": samples[i]}
        for i in range(min(3, len(samples)))
    )
    if not _scored(board, run.task, "bigram"):
        targets = np.concatenate([np.asarray(c) for _, c in pairs])
        board.add(
            "downstream",
            run.task,
            "unigram",
            "baseline",
            {"ppl": compute_unigram_perplexity(train_tokens, targets, vocab_size)},
        )
        bigram = BigramLM().fit(train_tokens, vocab_size)
        board.add("downstream", run.task, "bigram", "baseline", {"ppl": bigram.perplexity_of_continuations(pairs)})
        # the real continuations' diversity: what a human-written text measures, for scale
        board.add(
            "downstream",
            run.task,
            "real_text",
            "baseline",
            {
                "distinct_1": compute_distinct_n(real, 1),
                "distinct_2": compute_distinct_n(real, 2),
                "repetition_rate": compute_repetition_rate(real),
            },
        )


def _show(values, limit: int = 8) -> str:
    values = sorted(map(str, values))
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _scored(board: Scoreboard, task: str, system: str) -> bool:
    return any(s.task == task and s.system == system for s in board.scores)
