"""Per-task scoring settings: decoding overrides and the shuffled-source control."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from llm_pipeline.evaluation.downstream import derangement
from llm_pipeline.evaluation.suites import DecodingConfig, TaskSuite


def test_a_task_overrides_only_the_decoding_keys_it_names():
    base = DecodingConfig(num_beams=4, no_repeat_ngram_size=3, max_new_tokens=None, batch_size=8, length_penalty=0.6)
    merged = TaskSuite(decoding={"no_repeat_ngram_size": 0, "max_new_tokens": 96}).decoding_for(base)
    assert merged == DecodingConfig(
        num_beams=4, no_repeat_ngram_size=0, max_new_tokens=96, batch_size=8, length_penalty=0.6
    )
    assert TaskSuite().decoding_for(base) == base
    with pytest.raises(ValidationError, match="max_new_tokens"):
        TaskSuite(decoding={"max_new_tokens": 0})  # a decode budget below one token
    with pytest.raises(ValidationError, match="beams"):
        TaskSuite(decoding={"beams": 2})  # a misspelt key is refused, not ignored


@pytest.mark.parametrize("n", [2, 3, 10, 301])
def test_the_shuffled_source_never_gives_a_row_its_own_input(n):
    for seed in range(5):
        donor = derangement(n, seed)
        assert sorted(donor.tolist()) == list(range(n))  # every input used once
        assert not np.any(donor == np.arange(n))  # none stays in place
    assert not np.array_equal(derangement(50, 0), derangement(50, 1))  # the seed decides
