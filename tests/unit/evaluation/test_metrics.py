from __future__ import annotations

import math

import numpy as np
import pytest

from llm_pipeline.evaluation.metrics import (
    compute_accuracy,
    compute_macro_f1,
    compute_majority_baseline,
    compute_unigram_perplexity,
)


def test_accuracy():
    assert compute_accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75


def test_macro_f1_by_hand():
    preds, gold = [0, 0, 1, 1], [0, 1, 1, 1]
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp2 fp0 fn1 -> 4/5; class 2 absent -> 0
    assert compute_macro_f1(preds, gold, 2) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert compute_macro_f1(preds, gold, 3) == pytest.approx((2 / 3 + 4 / 5) / 3)


def test_majority_baseline_uses_train_majority():
    out = compute_majority_baseline([1, 1, 0], [1, 0, 0, 0], num_classes=2)
    assert out["accuracy"] == 0.25
    assert out["macro_f1"] == pytest.approx((0 + 2 / 5) / 2)


def test_unigram_perplexity_of_uniform_data_is_the_vocab_size():
    vocab = 16
    train = np.arange(vocab).repeat(100)
    assert compute_unigram_perplexity(train, np.arange(vocab), vocab) == pytest.approx(vocab)


def test_unigram_perplexity_rewards_frequent_tokens():
    train = np.array([0] * 90 + [1] * 10)
    frequent = compute_unigram_perplexity(train, np.zeros(10, dtype=int), 2)
    assert frequent == pytest.approx(math.exp(-math.log(91 / 102)))
    assert frequent < compute_unigram_perplexity(train, np.ones(10, dtype=int), 2)
