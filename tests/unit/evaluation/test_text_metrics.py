from __future__ import annotations

import math

import pytest

from llm_pipeline.evaluation.text_metrics import (
    compute_bleu_chrf,
    compute_distinct_n,
    compute_exact_match,
    compute_repetition_rate,
    compute_rouge,
    compute_token_f1,
    normalize_answer,
)


def test_rouge_by_hand():
    pred, ref = "the cat was on a mat", "the cat sat on the mat"
    # unigrams: the, cat, on, mat match (4/6 each way); bigrams: only "the cat" (1/5); LCS the-cat-on-mat (4/6)
    out = compute_rouge([pred], [ref])
    assert set(out) == {"rouge1", "rouge2", "rougeL"}
    assert out["rouge1"] == pytest.approx(2 / 3)
    assert out["rouge2"] == pytest.approx(1 / 5)
    assert out["rougeL"] == pytest.approx(2 / 3)


def test_rouge_is_a_mean_over_examples_and_stems():
    out = compute_rouge(["the cat was on a mat", "running cats"], ["the cat sat on the mat", "run cat"])
    assert out["rouge1"] == pytest.approx((2 / 3 + 1.0) / 2)  # Porter stemming: running -> run, cats -> cat
    assert out["rouge2"] == pytest.approx((1 / 5 + 1.0) / 2)


def test_rouge_drops_non_ascii_letters():
    # documented limitation of rouge-score's default tokenizer: nothing is left of non-Latin text
    assert compute_rouge(["日本語"], ["日本語"])["rouge1"] == 0.0


def test_mismatched_or_empty_inputs_raise():
    with pytest.raises(ValueError):
        compute_rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        compute_bleu_chrf([], [])
    with pytest.raises(ValueError):
        compute_exact_match(["a"], [])


def test_bleu_chrf_identical_is_100():
    out = compute_bleu_chrf(["the cat sat on the mat", "a dog barked"], ["the cat sat on the mat", "a dog barked"])
    assert out["bleu"] == pytest.approx(100.0) and out["bleu"] <= 100.0
    assert out["chrf"] == pytest.approx(100.0)


def test_bleu_by_hand_on_the_0_100_scale():
    # precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty -> 100 * (1/12) ** (1/4)
    out = compute_bleu_chrf(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert out["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert 1.0 < out["chrf"] < 100.0
    unrelated = compute_bleu_chrf(["zebra quantum"], ["the cat sat on a mat"])
    assert unrelated["bleu"] < out["bleu"] and unrelated["chrf"] < out["chrf"]


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("Anthem of the banana, an apple") == "anthem of banana apple"  # whole words only
    assert normalize_answer(" A.\n") == ""


def test_exact_match():
    preds, refs = ["the Eiffel tower.", "Paris", "an"], ["Eiffel Tower", "London", "the"]
    assert compute_exact_match(preds, refs) == pytest.approx(2 / 3)


def test_token_f1_by_hand():
    # normalised: "big red dog" vs "red dog barked": 2 common tokens, P = R = 2/3
    assert compute_token_f1(["the big red dog"], ["a red dog barked"]) == pytest.approx(2 / 3)
    # repeated tokens are clipped: "dog dog" vs "dog": P = 1/2, R = 1 -> 2/3
    assert compute_token_f1(["dog dog"], ["dog"]) == pytest.approx(2 / 3)
    # both empty after normalisation -> 1; one empty -> 0; disjoint -> 0
    assert compute_token_f1(["the", "", "cat"], ["a.", "x", "dog"]) == pytest.approx(1 / 3)


def test_distinct_n_exact_counts():
    texts = ["a b a b", "a b c"]
    assert compute_distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert compute_distinct_n(texts, 2) == pytest.approx(3 / 5)  # ab ba ab | ab bc
    assert compute_distinct_n(["a", "b"], 2) == 0.0  # no n-gram crosses texts
    assert compute_distinct_n([], 1) == 0.0
    with pytest.raises(ValueError):
        compute_distinct_n(texts, 0)


def test_repetition_rate():
    # "a b a b a b": 5 bigrams, 2 unique -> 0.6; "x y z": 0; "short" has no bigram and is skipped
    assert compute_repetition_rate(["a b a b a b", "x y z", "short"], n=2) == pytest.approx(0.3)
    assert compute_repetition_rate(["a a a a a a"]) == pytest.approx(2 / 3)  # default n=4: 3 grams, 1 unique
    assert compute_repetition_rate(["a b c"]) == 0.0
    assert math.isclose(compute_repetition_rate([]), 0.0)
