from collections import Counter

import pytest

from llm_pipeline.data.corpus.mixing import apply_weights, weighted_counts
from llm_pipeline.data.records import Document


def _docs(source, n):
    return [Document(source, str(i), f"{source} text {i}") for i in range(n)]


def test_weights_repeat_or_subsample_deterministically():
    train = _docs("a", 1000) + _docs("b", 1000) + _docs("c", 10)
    weights = {"a": 2.0, "b": 0.5, "c": 0.0}
    out = apply_weights(train, weights, "seed")
    n = Counter(d.source for d in out)
    assert n["a"] == 2000 and n["c"] == 0
    assert n["b"] == pytest.approx(500, abs=50)
    assert out == apply_weights(train, weights, "seed")
    first_round = 1000 + n["b"]  # copies come in rounds, not back to back
    assert len(set(out[:first_round])) == first_round
    counts = weighted_counts(train, out, weights)
    assert counts["a"] == {"weight": 2.0, "train_documents": 1000, "train_effective": 2000}


def test_fractional_weight_keeps_the_whole_part_plus_a_hash_chosen_share():
    out = apply_weights(_docs("a", 1000), {"a": 1.5}, "seed")
    assert len(out) == pytest.approx(1500, abs=60)
    assert set(out) == set(_docs("a", 1000))
