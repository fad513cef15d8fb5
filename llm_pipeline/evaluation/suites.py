"""Which metrics score a text-to-text task and which trivial rules it must beat: one place each.

A task's suite is named in params/evaluate.yaml (`tasks.<task>.metrics`, `.baselines`); a task
not listed there gets its kind's default, so a user's own seq2seq task is scored with no code change.

- METRIC_SUITES: name -> (predictions, references) -> {metric: value}, plus its primary metric.
- BASELINES: name -> a rule fitted on the train split that maps test inputs to predictions.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import Field, field_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.evaluation.baselines import NearestQuestion, lead_sentences, lead_words, most_frequent_answer
from llm_pipeline.evaluation.text_metrics import (
    compute_bleu_chrf,
    compute_exact_match,
    compute_rouge,
    compute_token_f1,
)

Scorer = Callable[[Sequence[str], Sequence[str]], dict[str, float]]


def _qa(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {
        "exact_match": compute_exact_match(predictions, references),
        "token_f1": compute_token_f1(predictions, references),
        "rougeL": compute_rouge(predictions, references)["rougeL"],
    }


@dataclass(frozen=True)
class MetricSuite:
    score: Scorer
    primary: str  # the metric verdicts and the promotion of a model compare on


METRIC_SUITES: dict[str, MetricSuite] = {
    "rouge": MetricSuite(compute_rouge, "rougeL"),  # ROUGE-1/2/L F (rouge-score, stemmed)
    "bleu_chrf": MetricSuite(compute_bleu_chrf, "chrf"),  # sacrebleu, 0-100
    "qa": MetricSuite(_qa, "token_f1"),  # SQuAD-normalised EM and token F1, plus ROUGE-L
}


# A baseline: (train inputs, train targets, test inputs) -> test predictions
Baseline = Callable[[Sequence[str], Sequence[str], Sequence[str]], list[str]]


def _lead_1(train_in: Sequence[str], train_out: Sequence[str], test_in: Sequence[str]) -> list[str]:
    return [lead_sentences(text, 1) for text in test_in]


def _lead_k(train_in: Sequence[str], train_out: Sequence[str], test_in: Sequence[str]) -> list[str]:
    """The first k words, k = the median train target length in words: as long as a typical answer."""
    k = max(1, round(statistics.median(len(t.split()) for t in train_out)))
    return [lead_words(text, k) for text in test_in]


def _copy_source(train_in: Sequence[str], train_out: Sequence[str], test_in: Sequence[str]) -> list[str]:
    return list(test_in)


def _most_frequent(train_in: Sequence[str], train_out: Sequence[str], test_in: Sequence[str]) -> list[str]:
    answer = most_frequent_answer(train_out)
    return [answer] * len(test_in)


def _nearest_question(train_in: Sequence[str], train_out: Sequence[str], test_in: Sequence[str]) -> list[str]:
    return NearestQuestion().fit(train_in, train_out).predict(test_in)


BASELINES: dict[str, Baseline] = {
    "lead_1": _lead_1,  # the first sentence of the input
    "lead_k": _lead_k,  # the first k words of the input
    "copy_source": _copy_source,  # the input itself (translation: untranslated)
    "most_frequent_answer": _most_frequent,  # the commonest train target, for every input
    "nearest_question": _nearest_question,  # the target of the most similar train input (TF-IDF cosine)
}


def _known(names: list[str], table: dict, what: str) -> list[str]:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(table)}")
    return names


class DecodingConfig(StageConfig):
    """How seq2seq test outputs are decoded (deterministic: beam search, or greedy at width 1)."""

    num_beams: int = Field(4, ge=1)
    length_penalty: float = 1.0  # score / length**penalty: > 0 favours longer outputs
    no_repeat_ngram_size: int = Field(0, ge=0)  # n > 0: no output repeats one of its own n-grams (of tokens)
    # new tokens decoded, end token included; null: each run's own format.max_target_len, the
    # budget its targets were cut to in training (baselines are also scored cut to that budget)
    max_new_tokens: int | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=0)


class DecodingOverride(StageConfig):
    """Per task: the DecodingConfig keys that differ from the stage's `decoding` (unset = inherited)."""

    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    max_new_tokens: int | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0)


class TaskSuite(StageConfig):
    """How one seq2seq task is scored (and decoded)."""

    metrics: list[str] = Field(default_factory=lambda: ["rouge"], min_length=1)
    baselines: list[str] = Field(default_factory=lambda: ["copy_source", "nearest_question"], min_length=1)
    by: str | None = None  # a column to also score per value of (translation: lang)
    primary: str | None = None  # default: the first suite's primary metric
    decoding: DecodingOverride = Field(default_factory=DecodingOverride)  # e.g. {no_repeat_ngram_size: 0}

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, names: list[str]) -> list[str]:
        return _known(names, METRIC_SUITES, "metric suites")

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, names: list[str]) -> list[str]:
        return _known(names, BASELINES, "baselines")

    def decoding_for(self, base: DecodingConfig) -> DecodingConfig:
        """The stage's decoding with this task's overrides applied."""
        return base.model_copy(update=self.decoding.model_dump(exclude_none=True))

    @property
    def primary_metric(self) -> str:
        return self.primary or METRIC_SUITES[self.metrics[0]].primary

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.metrics:
            out |= METRIC_SUITES[name].score(predictions, references)
        return out
