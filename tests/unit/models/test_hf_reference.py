"""Our weights in Hugging Face's reference models give our logits (transformers: test-only dependency)."""

import pytest
import torch

from llm_pipeline.models import IGNORE_INDEX, build_model
from llm_pipeline.models.attention import positions_from_mask

pytest.importorskip("transformers")
from llm_pipeline.models.hf_convert import to_hf_bert, to_hf_gpt2, to_hf_t5  # noqa: E402

VOCAB, TOL = 64, dict(atol=1e-4, rtol=0)


@pytest.fixture
def batch():
    """Random ids (3, 10) with left padding in row 0 and right padding in row 1."""
    torch.manual_seed(0)
    ids = torch.randint(VOCAB, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, :3], mask[1, 7:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("mlp", ["gelu", "gelu_tanh"])  # gelu_tanh is GPT-2's own "gelu_new"
def test_gpt2_style_matches_gpt2lmheadmodel(batch, mlp):
    ids, mask = batch
    ours = build_model("gpt", "tiny", VOCAB, mlp=mlp, n_layer=3).eval()
    ref = to_hf_gpt2(ours).eval()
    positions = positions_from_mask(mask)  # both count real tokens only, so left padding is harmless
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, position_ids=positions)[0]
        want = ref(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], **TOL)


def test_bert_matches_bertforpretraining(batch):
    ids, mask = batch
    ours = build_model("bert", "tiny", VOCAB, n_layer=3).eval()
    ref = to_hf_bert(ours).eval()
    types = (torch.arange(10) >= 5).long().expand(3, 10)
    with torch.no_grad():
        mlm, nsp = ours(ids, types, mask)
        want = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(mlm[real], want.prediction_logits[real], **TOL)
    torch.testing.assert_close(nsp, want.seq_relationship_logits, **TOL)


def test_t5_matches_t5forconditionalgeneration(batch):
    ids, mask = batch
    ours = build_model("t5", "tiny", VOCAB, n_decoder_layer=3).eval()
    ref = to_hf_t5(ours).eval()
    labels = torch.randint(VOCAB, (3, 7))
    labels[2, 5:] = IGNORE_INDEX  # right-padded target
    with torch.no_grad():
        logits, loss = ours(ids, mask, labels=labels)
        want = ref(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(labels == IGNORE_INDEX, -100))
        generated = ours.generate(ids, 8, attention_mask=mask)
        ref_generated = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                     min_new_tokens=8, eos_token_id=None,
                                     use_cache=False)  # HF's cache assumes equal encoder/decoder depth
    torch.testing.assert_close(logits, want.logits, **TOL)
    torch.testing.assert_close(loss, want.loss, **TOL)
    torch.testing.assert_close(generated, ref_generated)


def test_models_never_import_transformers():
    """The models and even their conversion module load and run without importing transformers.

    (Lightning's torchmetrics imports it opportunistically when installed; that is not a need.)
    """
    import subprocess
    import sys

    code = (
        "import sys, torch, llm_pipeline.models.hf_convert\n"
        "from llm_pipeline.models import build_model\n"
        "for family in ('gpt', 'bert', 't5'):\n"
        "    model = build_model(family, 'tiny', 16)\n"
        "    ids = torch.zeros(1, 4, dtype=torch.long)\n"
        "    model(ids, labels=ids) if family == 't5' else model(ids)\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
