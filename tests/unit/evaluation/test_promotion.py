"""The promotion gate's decision, pure: better on the same test set -> champion, else challenger."""

from __future__ import annotations

import pytest

from llm_pipeline.evaluation.promotion import CHALLENGER, CHAMPION, compute_decision, compute_test_set_digest


def test_the_first_version_is_champion():
    decision = compute_decision(0.5, None, higher_is_better=True, same_data=True)
    assert decision.alias == CHAMPION and decision.promoted and "first" in decision.reason


@pytest.mark.parametrize(
    ("new", "old", "higher", "alias"),
    [
        (0.8, 0.7, True, CHAMPION),  # F1 up
        (0.6, 0.7, True, CHALLENGER),  # F1 down
        (0.7, 0.7, True, CHALLENGER),  # a tie does not beat the champion
        (90.0, 120.0, False, CHAMPION),  # perplexity down
        (130.0, 120.0, False, CHALLENGER),  # perplexity up
    ],
)
def test_direction_of_the_primary_metric_decides(new, old, higher, alias):
    decision = compute_decision(new, old, higher_is_better=higher, same_data=True)
    assert decision.alias == alias
    assert f"{new:.6g} vs {old:.6g}" in decision.reason  # both numbers, for the person reading the tag


def test_numbers_from_another_test_set_never_promote():
    decision = compute_decision(0.99, 0.1, higher_is_better=True, same_data=False)
    assert decision.alias == CHALLENGER
    assert decision.reason == "champion scored on another test set and could not be rescored"


def test_the_test_set_digest_changes_with_the_file_and_with_the_subset_scored():
    one = "a" * 64
    assert compute_test_set_digest([one], {}) == one  # one file, every example: that file's sha256
    capped = compute_test_set_digest([one], {"max_examples": 300})
    assert capped != one and capped != compute_test_set_digest([one], {"max_examples": 200})
    assert compute_test_set_digest(["b" * 64], {"max_examples": 300}) != capped
