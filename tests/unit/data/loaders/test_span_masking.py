"""T5 span corruption: T5's length recipe, noise statistics, and exact reconstruction."""

import pytest
import torch

from llm_pipeline.data.loaders.span_masking import (
    SpanCorruptionConfig,
    apply_span_corruption,
    compute_noise_mask,
    compute_raw_length,
    corrupt_spans,
    denoise,
    prefix_lm,
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


def test_prefix_lm_splits_the_window_into_what_is_read_and_what_is_written():
    g = torch.Generator().manual_seed(3)
    tokens = torch.arange(100, 241)  # (141,)
    cuts = set()
    for _ in range(200):
        inputs, targets = prefix_lm(tokens, EOS, max_target=58, generator=g)
        assert inputs[-1] == EOS and targets[-1] == EOS
        assert inputs[:-1].tolist() + targets[:-1].tolist() == tokens.tolist()
        cuts.add(len(targets) - 1)
    assert min(cuts) == 1 and max(cuts) == 58  # every tail length 1..max_target is drawn


def test_denoise_rewrites_the_whole_corrupted_head():
    g = torch.Generator().manual_seed(4)
    tokens = torch.randint(10, 900, (141,), generator=g)
    inputs, targets = denoise(tokens, CFG, max_target=58, generator=g)
    assert targets.tolist() == tokens[:58].tolist() + [EOS]  # the target is the clean head
    assert inputs[-1] == EOS and any(t in SENTINELS for t in inputs.tolist())
    kept = [t for t in inputs[:-1].tolist() if t not in SENTINELS]
    assert len(kept) < 58 and all(t in tokens[:58].tolist() for t in kept)


def test_the_objective_mix_sets_each_objectives_share_of_training_windows(tmp_path):
    from llm_pipeline.data.loaders.span_corruption import SpanCorruptionDataset
    from llm_pipeline.data.tokenization.shards import write_shard

    shard = tmp_path / "train.bin"
    write_shard(iter([torch.randint(10, 900, (5000,)).numpy().astype("uint16")]), shard)
    mix = {"span_corruption": 0.5, "prefix_lm": 0.3, "denoise": 0.2}
    train = SpanCorruptionDataset(shard, "uint16", 128, CFG, random=True, objective_mix=mix)
    g = torch.Generator().manual_seed(5)
    drawn = [train.objective_of(g) for _ in range(4000)]
    for name, share in mix.items():
        assert abs(drawn.count(name) / len(drawn) - share) < 0.03
    # validation stays pure span corruption, whatever the mix: its metric compares across runs
    val = SpanCorruptionDataset(shard, "uint16", 128, CFG, random=False, objective_mix=mix)
    assert all(len(val[i][0]) == 128 and len(val[i][1]) == 29 for i in range(20))
    # targets of every objective stay within twice span corruption's (29): short decoder batches
    assert max(len(train.item(i % len(train), g)[1]) for i in range(200)) <= 2 * 29 + 1


def test_an_unknown_objective_or_an_empty_mix_is_refused():
    from pydantic import ValidationError

    from llm_pipeline.data.loaders.config import PretrainDataConfig

    with pytest.raises(ValidationError, match=r"unknown objective\(s\) \['prefix'\]; known: span_corruption"):
        PretrainDataConfig(objective_mix={"prefix": 1.0})
    with pytest.raises(ValidationError, match="positive sum"):
        PretrainDataConfig(objective_mix={"denoise": 0.0})
