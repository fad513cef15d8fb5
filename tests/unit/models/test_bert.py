from typing import cast

import pytest
import torch

from llm_pipeline.errors import PipelineError
from llm_pipeline.families import build_model
from llm_pipeline.models import BERT

VOCAB = 40


@pytest.fixture
def model() -> BERT:
    torch.manual_seed(0)
    return cast(BERT, build_model("bert", "tiny", VOCAB, max_position_embeddings=16).eval())


def test_heads_shapes_and_tied_decoder(model):
    ids = torch.randint(VOCAB, (3, 10))
    out = model(ids, torch.zeros_like(ids), torch.ones_like(ids))
    mlm, nsp = out.logits, out.sequence_logits
    assert mlm.shape == (3, 10, VOCAB) and nsp.shape == (3, 2)
    assert not any(p is model.embeddings.word.weight for n, p in model.named_parameters() if "mlm" in n)
    with torch.no_grad():  # the MLM decoder reads the word embedding matrix itself
        model.embeddings.word.weight[5] += 1.0
    assert not torch.allclose(model(ids).logits[..., 5], mlm[..., 5])


def test_mlm_positions_score_only_the_selected_positions(model):
    ids = torch.randint(VOCAB, (2, 10))
    picked = torch.rand(2, 10, generator=torch.Generator().manual_seed(0)) < 0.3
    full = model(ids).logits  # (B, T, V)
    selected = model(ids, mlm_positions=picked).logits  # (M, V)
    assert selected.shape == (int(picked.sum()), VOCAB)
    torch.testing.assert_close(selected, full[picked])


def test_attention_is_bidirectional(model):
    ids = torch.randint(VOCAB, (2, 12))
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    assert not torch.allclose(model(ids).logits[:, 0], model(changed).logits[:, 0])  # the first token sees the last


def test_padding_does_not_change_real_positions(model):
    ids = torch.randint(VOCAB, (2, 8))
    padded = torch.cat((ids, torch.zeros(2, 4, dtype=torch.long)), dim=1)
    mask = torch.cat((torch.ones(2, 8), torch.zeros(2, 4)), dim=1).long()
    mlm, nsp = model(ids).logits, model(ids).sequence_logits
    out = model(padded, attention_mask=mask)
    mlm_p, nsp_p = out.logits, out.sequence_logits
    torch.testing.assert_close(mlm_p[:, :8], mlm, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nsp_p, nsp, atol=1e-5, rtol=1e-5)


def test_segments_change_the_output(model):
    ids = torch.randint(VOCAB, (1, 8))
    types = torch.tensor([[0] * 4 + [1] * 4])
    assert not torch.allclose(model(ids, types).sequence_logits, model(ids).sequence_logits)


def test_too_long_sequence_fails_before_running(model):
    with pytest.raises(PipelineError, match="max_position_embeddings=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
