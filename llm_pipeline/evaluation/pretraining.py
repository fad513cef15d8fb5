"""Score the pretrained models on the test split, each beside the trivial rule of its objective.

- lm (causal LM): test perplexity vs add-one unigram and interpolated bigram models of the train tokens;
- nsp (BERT): next-sentence accuracy vs a threshold on the two segments' word overlap, fitted on train pairs;
- mlm (BERT): masked-token accuracy (its floor, the most frequent token, is near zero);
- span_corruption (T5): target-token accuracy vs predicting every sentinel exactly and the most
  frequent train token everywhere else.
Every model metric comes from the objective's own `compute` over test batches, so it means
exactly what the validation metric of the same name means during training.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from llm_pipeline.data.loaders.mlm_nsp import NSP_COLUMNS
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.evaluation.baselines import (
    BigramLM,
    WordOverlapNSP,
    most_frequent_token,
    span_corruption_baseline_accuracy,
)
from llm_pipeline.evaluation.harness import compute_lm_perplexity
from llm_pipeline.evaluation.metrics import compute_unigram_perplexity
from llm_pipeline.evaluation.scoreboard import Scoreboard
from llm_pipeline.models.blocks import IGNORE_INDEX
from llm_pipeline.training.objectives import Objective


def first_batches(loader: DataLoader, max_batches: int | None) -> list[Any]:
    """The loader's first batches (a test loader is unshuffled and fixed: the same every run)."""
    return [b for b, _ in zip(loader, range(max_batches) if max_batches else itertools.count(), strict=False)]


@torch.no_grad()
def compute_objective_means(model, objective: Objective, batches: list[Any]) -> dict[str, float]:
    """The objective's metrics over `batches`, each a mean weighted as in validation."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for batch in batches:
        _, metrics = objective.compute(model, batch)
        for name, (value, weight) in metrics.items():
            w = float(weight)
            sums[name] = sums.get(name, 0.0) + float(value) * w
            weights[name] = weights.get(name, 0.0) + w
    return {name: sums[name] / max(weights[name], 1e-12) for name in sums}


def score_lm(
    board: Scoreboard, family: str, model, test: np.ndarray, train: np.ndarray, vocab: int, batch: int
) -> None:
    ppl, targets = compute_lm_perplexity(model, test, batch)
    board.primary["lm"] = "ppl"
    board.add("pretraining", "lm", family, "model", {"ppl": ppl, "test_tokens": len(targets)})
    board.add("pretraining", "lm", "unigram", "baseline", {"ppl": compute_unigram_perplexity(train, targets, vocab)})
    # scored on the same target tokens, each given the token before it
    stream = test[: len(targets) + 1]
    board.add("pretraining", "lm", "bigram", "baseline", {"ppl": BigramLM().fit(train, vocab).perplexity(stream)})


def score_mlm_nsp(board: Scoreboard, family: str, model, objective: Objective, batches: list[Any], tasks_dir) -> None:
    means = compute_objective_means(model, objective, batches)
    pairs = sum(len(b["nsp_label"]) for b in batches)  # the first `pairs` test pairs, in file order
    board.primary["nsp"] = "accuracy"
    board.add(
        "pretraining",
        "nsp",
        family,
        "model",
        {"accuracy": means["nsp_acc"], "loss": means["nsp_loss"], "test_pairs": pairs},
    )
    board.add("pretraining", "mlm", family, "model", {"accuracy": means["mlm_acc"], "loss": means["mlm_loss"]})
    train = load_task_split(tasks_dir, "nsp", "train", NSP_COLUMNS)
    test = load_task_split(tasks_dir, "nsp", "test", NSP_COLUMNS).head(pairs)  # the pairs BERT was scored on
    rule = WordOverlapNSP().fit(
        train["text_a"].tolist(), train["text_b"].tolist(), train["is_next"].astype(int).tolist()
    )
    accuracy = rule.accuracy(test["text_a"].tolist(), test["text_b"].tolist(), test["is_next"].astype(int).tolist())
    board.add("pretraining", "nsp", "word_overlap", "baseline", {"accuracy": accuracy})


def score_span_corruption(
    board: Scoreboard,
    family: str,
    model,
    objective: Objective,
    batches: list[Any],
    train_tokens: np.ndarray,
    sentinel_ids: tuple[int, ...],
    specials: tuple[int, ...],
) -> None:
    means = compute_objective_means(model, objective, batches)
    board.primary["span_corruption"] = "accuracy"
    board.add("pretraining", "span_corruption", family, "model", {"accuracy": means["acc"], "loss": means["loss"]})
    frequent = most_frequent_token(train_tokens, exclude=(*sentinel_ids, *specials))
    targets: list[Any] = [batch["labels"][batch["labels"] != IGNORE_INDEX] for batch in batches]
    board.add(
        "pretraining",
        "span_corruption",
        "sentinels_and_most_frequent",
        "baseline",
        {"accuracy": span_corruption_baseline_accuracy(targets, sentinel_ids, frequent)},
    )
