"""T5 span corruption: T5's length recipe, noise statistics, and exact reconstruction."""

import pytest
import torch

from llm_pipeline.data.loaders.span_masking import (
    SpanCorruptionConfig,
    apply_span_corruption,
    compute_noise_mask,
    compute_raw_length,
    corrupt_spans,
)
from llm_pipeline.errors import PipelineError

EOS = 1
SENTINELS = tuple(range(1000, 990, -1))  # decreasing ids, like T5's <extra_id_0> = vocab_size - 1
CFG = SpanCorruptionConfig(sentinel_ids=SENTINELS, eos_id=EOS)


def reconstruct(inputs: torch.Tensor, targets: torch.Tensor, sentinels=SENTINELS) -> list[int]:
    """Put the target spans back in place of the input sentinels."""
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for t in targets[:-1].tolist():
        if t in sentinels:
            current = spans.setdefault(t, [])
        else:
            assert current is not None, "targets start with a sentinel"
            current.append(t)
    out: list[int] = []
    for t in inputs[:-1].tolist():
        out.extend(spans[t] if t in sentinels else [t])
    return out


@pytest.mark.parametrize(("inputs_length", "expected"), [(512, (568, 114)), (128, (141, 29))])
def test_raw_length_matches_t5_random_spans_helper(inputs_length, expected):
    assert compute_raw_length(inputs_length, 0.15, 3.0) == expected


def test_docstring_example():
    tokens = torch.arange(10, 20)  # a..j
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[2, 3, 9]] = True
    inputs, targets = apply_span_corruption(tokens, mask, CFG)
    assert inputs.tolist() == [10, 11, 1000, 14, 15, 16, 17, 18, 999, EOS]
    assert targets.tolist() == [1000, 12, 13, 999, 19, EOS]


def test_noise_density_and_mean_span_length_over_many_samples():
    g = torch.Generator().manual_seed(0)
    noise, spans, tokens = 0, 0, 0
    for _ in range(300):
        mask = compute_noise_mask(141, 0.15, 3.0, g)
        assert not mask[0] and mask[-1]  # T5 starts with a non-noise span, ends with noise
        starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])
        noise, spans, tokens = noise + int(mask.sum()), spans + int(starts.sum()), tokens + len(mask)
    assert noise / tokens == pytest.approx(0.15, abs=0.005)
    assert noise / spans == pytest.approx(3.0, abs=0.1)


def test_masks_differ_between_draws_but_lengths_do_not():
    g = torch.Generator().manual_seed(1)
    pairs = [corrupt_spans(torch.arange(100, 241), CFG, g) for _ in range(20)]
    assert {len(x) for x, _ in pairs} == {128} and {len(y) for _, y in pairs} == {29}
    assert len({tuple(x.tolist()) for x, _ in pairs}) > 15


def test_inputs_and_targets_reconstruct_the_original():
    g = torch.Generator().manual_seed(2)
    for length in (2, 5, 37, 142, 300):
        tokens = torch.randint(10, 900, (length,), generator=g)
        sentinels = tuple(range(1000, 900, -1))
        inputs, targets = corrupt_spans(tokens, SpanCorruptionConfig(sentinels, EOS), g)
        assert inputs[-1] == EOS and targets[-1] == EOS
        assert targets[0] == 1000  # the first sentinel opens the target
        assert reconstruct(inputs, targets, sentinels) == tokens.tolist()


def test_too_few_sentinels_is_a_clear_error():
    with pytest.raises(PipelineError, match="sentinel"):
        corrupt_spans(torch.arange(10, 310), SpanCorruptionConfig((1000, 999), EOS))
