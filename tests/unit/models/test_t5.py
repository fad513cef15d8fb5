from typing import cast

import pytest
import torch

from llm_pipeline.families import build_model
from llm_pipeline.models import IGNORE_INDEX, T5
from llm_pipeline.models.t5 import relative_position_bucket
from llm_pipeline.training.objectives import token_cross_entropy

VOCAB = 40


@pytest.fixture
def model() -> T5:
    torch.manual_seed(0)
    return cast(T5, build_model("t5", "tiny", VOCAB).eval())


def test_forward_shapes_loss_and_shift_right(model):
    src, labels = torch.randint(VOCAB, (2, 9)), torch.randint(2, VOCAB, (2, 5))
    labels[1, 3:] = IGNORE_INDEX
    logits = model(src, model.shift_right(labels)).logits
    assert logits.shape == (2, 5, VOCAB)
    assert model.shift_right(labels)[1].tolist() == [0, *labels[1, :3].tolist(), 0]  # start, then pad for ignored
    kept = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[kept], labels[kept])
    torch.testing.assert_close(token_cross_entropy(logits, labels), expected)


def test_decoder_is_causal_and_encoder_is_not(model):
    src, dec = torch.randint(VOCAB, (2, 9)), torch.randint(VOCAB, (2, 8))
    base = model(src, dec).logits
    later = dec.clone()
    later[:, 5:] = (later[:, 5:] + 1) % VOCAB
    changed = model(src, later).logits
    torch.testing.assert_close(changed[:, :5], base[:, :5])
    assert not torch.allclose(changed[:, 5:], base[:, 5:])
    last_src = src.clone()
    last_src[:, -1] = (last_src[:, -1] + 1) % VOCAB
    assert not torch.allclose(model(last_src, dec).logits[:, 0], base[:, 0])


def test_encoder_padding_is_ignored(model):
    src, dec = torch.randint(VOCAB, (2, 6)), torch.randint(VOCAB, (2, 4))
    padded = torch.cat((src, torch.zeros(2, 3, dtype=torch.long)), dim=1)
    mask = torch.cat((torch.ones(2, 6), torch.zeros(2, 3)), dim=1).long()
    torch.testing.assert_close(model(padded, dec, mask).logits, model(src, dec).logits, atol=1e-5, rtol=1e-5)


def test_kv_cache_generation_equals_no_cache(model):
    src = torch.randint(VOCAB, (3, 7))
    mask = torch.ones_like(src)
    mask[0, 5:] = 0
    cached = model.generate(src, 12, attention_mask=mask)
    uncached = model.generate(src, 12, attention_mask=mask, use_cache=False)
    assert cached.shape == (3, 12)
    torch.testing.assert_close(cached, uncached)
    # and greedy means argmax of the teacher-forced logits (the decoder starts from pad_id 0)
    logits = model(src, model.shift_right(cached), mask).logits
    torch.testing.assert_close(cached, logits.argmax(-1))


def test_generation_stops_at_eos(model):
    src = torch.randint(VOCAB, (1, 5))
    eos = int(model.generate(src, 1)[0, 0])
    assert model.generate(src, 10, stop_ids=[eos]).tolist() == [[eos]]


def test_relative_buckets_match_t5_layout():
    offsets = torch.arange(-6, 7)  # key - query
    both = relative_position_bucket(offsets, bidirectional=True, num_buckets=8, max_distance=16)
    # keys before the query: buckets 0..3 by distance; after it: 4..7; small distances are exact
    assert both[6].item() == 0 and both[5].item() == 1 and both[7].item() == 5
    assert both[:6].max() < 4 <= both[7:].min()
    causal = relative_position_bucket(offsets, bidirectional=False, num_buckets=8, max_distance=16)
    assert (causal[6:] == 0).all() and causal[:6].tolist() == sorted(causal[:6].tolist(), reverse=True)
