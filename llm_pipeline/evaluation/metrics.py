"""Pure metric functions: no I/O, no models. Inputs are arrays of ids or token ids."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


def compute_accuracy(predictions: Sequence[int], targets: Sequence[int]) -> float:
    preds, gold = np.asarray(predictions), np.asarray(targets)
    if len(gold) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((preds == gold).mean())


def compute_macro_f1(predictions: Sequence[int], targets: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of per-class F1 over all `num_classes` (a class never predicted
    nor present scores 0, as in scikit-learn's zero_division=0)."""
    preds, gold = np.asarray(predictions), np.asarray(targets)
    scores = []
    for c in range(num_classes):
        tp = int(((preds == c) & (gold == c)).sum())
        fp = int(((preds == c) & (gold != c)).sum())
        fn = int(((preds != c) & (gold == c)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def compute_majority_baseline(
    train_labels: Sequence[int], test_labels: Sequence[int], num_classes: int
) -> dict[str, float]:
    """Always predict the most frequent train label: the floor a classifier must clear."""
    majority = Counter(train_labels).most_common(1)[0][0]
    preds = [majority] * len(test_labels)
    return {
        "accuracy": compute_accuracy(preds, test_labels),
        "macro_f1": compute_macro_f1(preds, test_labels, num_classes),
    }


def compute_unigram_perplexity(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model fitted on train, scored on eval tokens.

    The context-free baseline a language model must beat.
    """
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size) + 1.0
    log_probs = np.log(counts) - math.log(counts.sum())
    nll = -log_probs[np.asarray(eval_tokens, dtype=np.int64)].mean()
    return float(math.exp(nll))
