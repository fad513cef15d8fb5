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
from llm_pipeline.data.loaders.seq2seq import Seq2SeqFormat, build_seq2seq_loader, encode_pairs, format_rows
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.data.tokenization.tokenizer import load_tokenizer, unk_rate
from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.baselines import BigramLM, TfidfLogReg
from llm_pipeline.evaluation.harness import compute_continuation_perplexity, compute_target_loss
from llm_pipeline.evaluation.metrics import (
    compute_accuracy,
    compute_macro_f1,
    compute_majority_baseline,
    compute_unigram_perplexity,
)
from llm_pipeline.evaluation.scoreboard import LOWER_IS_BETTER, Scoreboard
from llm_pipeline.evaluation.suites import BASELINES, DecodingConfig, TaskSuite
from llm_pipeline.evaluation.text_metrics import compute_distinct_n, compute_repetition_rate
from llm_pipeline.io import read_manifest
from llm_pipeline.model_files import check_tokenizer, load_classifier, load_pretrained
from llm_pipeline.prediction import decode_texts, predict_classes
from llm_pipeline.training.objectives import text_to_text_objective


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

    @property
    def from_scratch(self) -> bool:
        return self.manifest.get("init") == "scratch"

    @property
    def system(self) -> str:
        """Its name in the scores: the family, or <family>-scratch for the no-pretraining ablation."""
        return f"{self.family}-scratch" if self.from_scratch else self.family


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
        run.system,
        "model",
        {
            "accuracy": compute_accuracy(preds, gold),
            "macro_f1": compute_macro_f1(preds, gold, len(labels)),
            "test_examples": len(gold),
            "unknown_label_examples": unknown,
        },
    )
    if not _scored(board, run.task, "majority"):
        score_classification_baselines(board, run.task, tasks_dir, labels, test_df, gold)


def score_classification_baselines(
    board: Scoreboard, task: str, tasks_dir: str, labels: list[str], test_df: pd.DataFrame, gold: list[int]
) -> None:
    """The majority label and TF-IDF + logistic regression, on the test examples the models were
    scored on (those with a label the models know, in the same order as `gold`)."""
    index = {label: i for i, label in enumerate(labels)}

    def known(frame: pd.DataFrame) -> tuple[list[str], list[int]]:
        frame = frame[frame["label"].isin(index)]
        return frame["text"].tolist(), [index[x] for x in frame["label"]]

    train_texts, train_ids = known(load_task_split(tasks_dir, task, "train", ("text", "label")))
    val_texts, val_ids = known(load_task_split(tasks_dir, task, "val", ("text", "label")))
    test_texts, test_ids = known(test_df)
    assert test_ids == gold, "baselines must score the same test examples as the models"
    board.add("downstream", task, "majority", "baseline", compute_majority_baseline(train_ids, gold, len(labels)))
    if len(set(train_ids)) < 2:
        return  # one label: the majority rule is the whole story
    tfidf = TfidfLogReg().fit(train_texts, train_ids, val_texts, val_ids, num_classes=len(labels))
    preds = tfidf.predict(test_texts)
    board.add(
        "downstream",
        task,
        "tfidf_logreg",
        "baseline",
        {"accuracy": compute_accuracy(preds, gold), "macro_f1": compute_macro_f1(preds, gold, len(labels))},
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
    decoding = suite.decoding_for(decoding)
    budget = decoding.max_new_tokens or fmt.max_target_len  # default: the target budget it trained on
    predictions = decode_texts(
        run.model,
        run.tokenizer,
        [p.source for p in pairs],
        style,
        pad_id=run.manifest["pad_id"],
        end_id=run.manifest["end_id"],
        max_new_tokens=budget,
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
        run.system,
        "model",
        _suite_scores(suite, test, predictions, references)
        | compute_source_gain(run, test, fmt, where, decoding.batch_size, seed)
        | {"test_examples": len(test), "target_unk_rate": unk_rate(run.tokenizer, references), "decode_budget": budget},
    )
    board.examples.setdefault(run.task, []).extend(
        {"family": run.system, "input": src, "reference": ref, "prediction": pred}
        for src, ref, pred in list(zip(format_rows(test, fmt.input_template, where), references, predictions))[
            :n_examples
        ]
    )
    train = load_task_split(tasks_dir, run.task, "train", ("input", "target"))
    for name in suite.baselines:
        at_budget = f"{name}_{budget}tok"  # the same rule, its output cut to the model's decode budget
        if _scored(board, run.task, name) and _scored(board, run.task, at_budget):
            continue
        guesses = BASELINES[name](train["input"].tolist(), train["target"].tolist(), test["input"].tolist())
        if not _scored(board, run.task, name):
            board.add("downstream", run.task, name, "baseline", _suite_scores(suite, test, guesses, references))
        cut = cut_to_tokens(run.tokenizer, guesses, budget)
        if cut != guesses and not _scored(board, run.task, at_budget):
            board.add("downstream", run.task, at_budget, "baseline", _suite_scores(suite, test, cut, references))


def cut_to_tokens(tokenizer, texts: list[str], budget: int) -> list[str]:
    """Each text cut to its first `budget` tokens (the model's tokenizer), as a decode of at most
    `budget` new tokens would be; texts within the budget come back unchanged."""
    out = []
    for text, encoding in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True):
        out.append(text if len(encoding.ids) <= budget else tokenizer.decode(encoding.ids[:budget]).strip())
    return out


def derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) (n >= 2) with no fixed point: row i reads row donor[i]."""
    order = np.random.default_rng(seed).permutation(n)
    donor = np.empty(n, dtype=np.int64)
    donor[order] = np.roll(order, 1)  # row order[i] reads row order[i-1]: a single n-cycle
    return donor


def compute_source_gain(
    run: FinetunedRun, test: pd.DataFrame, fmt: Seq2SeqFormat, where: str, batch_size: int, seed: int
) -> dict[str, float]:
    """Does the writer read its input? Teacher-forced loss per target token (nats) with the true
    input, with another test example's input (a fixed derangement: every row gets a different
    row's `input`, its other columns, e.g. lang, kept) and with an empty input.
    source_gain = shuffled - true; a writer that ignores its input scores about 0."""
    style = run.manifest["style"]
    objective = text_to_text_objective(style)

    def loss(frame: pd.DataFrame) -> float:
        pairs = encode_pairs(run.tokenizer, frame, fmt, style, run.manifest["end_id"], where)
        loader = build_seq2seq_loader(pairs, style, run.manifest["pad_id"], batch_size, train=False)
        return compute_target_loss(run.model, objective, loader)

    out = {"loss_true_source": loss(test)}
    n = len(test)
    if n > 1:
        out["loss_shuffled_source"] = loss(test.assign(input=test["input"].to_numpy()[derangement(n, seed)]))
        out["source_gain"] = out["loss_shuffled_source"] - out["loss_true_source"]
    try:
        out["loss_empty_source"] = loss(test.assign(input=""))
        out["source_gain_empty"] = out["loss_empty_source"] - out["loss_true_source"]
    except PipelineError:
        pass  # a template that is only {input}: an empty input leaves the model nothing to read
    return out


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
    board.add("downstream", run.task, run.system, "model", {"ppl": ppl, "test_examples": len(pairs)} | diversity)
    board.examples.setdefault(run.task, []).extend(
        {"family": run.system, "input": test["prompt"][i], "reference": real[i], "prediction": samples[i]}
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


def add_pretraining_gains(board: Scoreboard, runs: list[FinetunedRun]) -> None:
    """What pretraining buys: for each run trained from scratch (finetune `init: scratch`) and
    its pretrained twin (same task and family), the twin's primary score minus the scratch one's,
    signed so that > 0 means pretraining helped, as the twin's `pretraining_gain`."""
    for scratch in (r for r in runs if r.from_scratch):
        twin = next(
            (r for r in runs if not r.from_scratch and (r.task, r.family) == (scratch.task, scratch.family)), None
        )
        metric = board.primary.get(scratch.task)
        if twin is None or metric is None:
            continue  # an ablation alone: its own row says how it does
        pretrained, from_scratch = (
            board.value(twin.task, twin.system, metric),
            board.value(scratch.task, scratch.system, metric),
        )
        if pretrained is None or from_scratch is None:
            continue
        sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        board.add(
            "downstream", twin.task, twin.system, "model", {"pretraining_gain": sign * (pretrained - from_scratch)}
        )


def _show(values, limit: int = 8) -> str:
    values = sorted(map(str, values))
    return ", ".join(values[:limit]) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _scored(board: Scoreboard, task: str, system: str) -> bool:
    return any(s.task == task and s.system == system for s in board.scores)
