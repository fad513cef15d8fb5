"""`llm-pipeline export`: each family's export loads with transformers' from_pretrained (offline) and
gives our logits; its tokenizer encodes as ours. Every parameter is randomised first (as in
tests/unit/models/test_hf_convert.py, whose parity checks these reuse on the reloaded twin)."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer

from llm_pipeline.errors import PipelineError
from llm_pipeline.export import export_hf
from llm_pipeline.models.classifier import SequenceClassifier
from tests.unit.model_folders import write_model_folder
from tests.unit.models.test_hf_convert import (
    check_bert,
    check_gpt,
    check_t5,
    make_bert,
    make_gpt,
    make_t5,
    mixed_padded_mask,
    randomize_,
)

transformers = pytest.importorskip("transformers")
VOCAB = 300  # the test tokenizers' size (tests/unit/model_folders.py)
TEXTS = ["The package provides a library", "tools to convert <extra_id_0> images [MASK] and audio", ""]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def export_and_load(tmp_path, family: str, model, auto: str, **folder_kwargs) -> tuple[Any, Any, Tokenizer]:
    folder = write_model_folder(tmp_path / "model", family, model=model, **folder_kwargs)
    files = {p.name for p in export_hf(folder, tmp_path / "hf")}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    hf = getattr(transformers, auto).from_pretrained(tmp_path / "hf").eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in TEXTS:  # with the specials each kind adds ([CLS] .. [SEP], .. </s>), as ours
        assert hf_tokenizer(text)["input_ids"] == ours.encode(text).ids, text
    return hf, hf_tokenizer, ours


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("style", "twin"), [("gpt2", "GPT2LMHeadModel"), ("modern", "LlamaForCausalLM")])
def test_gpt_exports_as_a_causal_lm_with_our_logits(tmp_path, seed, style, twin):
    ours = make_gpt(style, seed, vocab_size=VOCAB)
    hf, tokenizer, _ = export_and_load(tmp_path, "gpt", ours, "AutoModelForCausalLM")
    assert type(hf).__name__ == twin
    check_gpt(ours, hf, seed)
    assert tokenizer.eos_token == "<|endoftext|>" and hf.config.eos_token_id == tokenizer.eos_token_id
    assert tokenizer.model_max_length == ours.config.block_size


@pytest.mark.parametrize("seed", [0, 1])
def test_bert_exports_for_pretraining_with_our_mlm_and_nsp_logits(tmp_path, seed):
    ours = make_bert(seed, vocab_size=VOCAB, max_position_embeddings=64)
    hf, tokenizer, _ = export_and_load(tmp_path, "bert", ours, "AutoModelForPreTraining")
    assert type(hf).__name__ == "BertForPreTraining"
    check_bert(ours, hf, seed)
    assert (tokenizer.mask_token, tokenizer.cls_token, tokenizer.pad_token) == ("[MASK]", "[CLS]", "[PAD]")


@pytest.mark.parametrize("seed", [0, 1])
def test_t5_seq2seq_exports_for_conditional_generation_with_our_logits(tmp_path, seed):
    ours = make_t5(seed, vocab_size=VOCAB)
    fmt = {"input_template": "summarize: {input}"}
    hf, tokenizer, _ = export_and_load(tmp_path, "t5", ours, "AutoModelForSeq2SeqLM", kind="seq2seq", fmt=fmt)
    assert type(hf).__name__ == "T5ForConditionalGeneration"
    check_t5(ours, hf, seed)
    assert hf.config.task_specific_params["task"]["input_template"] == "summarize: {input}"
    assert tokenizer.eos_token == "</s>" and "<extra_id_9>" in tokenizer.all_special_tokens


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bert_classifier_exports_for_sequence_classification_with_our_logits(tmp_path, seed):
    backbone = make_bert(seed, vocab_size=VOCAB, max_position_embeddings=64)
    ours = randomize_(SequenceClassifier(backbone, 3), torch.Generator().manual_seed(seed)).eval()
    labels = ["games", "net", "sound"]
    hf, _, _ = export_and_load(
        tmp_path, "bert", ours, "AutoModelForSequenceClassification", kind="classification", labels=labels
    )
    assert type(hf).__name__ == "BertForSequenceClassification" and hf.config.id2label == dict(enumerate(labels))
    ids = torch.randint(VOCAB, (3, 11), generator=torch.Generator().manual_seed(seed))
    mask = mixed_padded_mask()
    with torch.no_grad():
        got, want = ours(ids, mask).logits, hf(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("family", "why"), [("gpt", "without a bias"), ("t5", "encoder's mean state")])
def test_classifiers_without_an_exact_twin_are_refused_in_one_line(tmp_path, family, why):
    folder = write_model_folder(tmp_path / "m", family, kind="classification")
    with pytest.raises(PipelineError, match=why):
        export_hf(folder, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_gpt_block_no_twin_has_is_refused_and_a_missing_transformers_named(tmp_path, monkeypatch):
    mixed = make_gpt("gpt2", 0, vocab_size=VOCAB, pos_embedding="rope")  # RoPE with LayerNorm: no twin
    folder = write_model_folder(tmp_path / "m", "gpt", model=mixed)
    with pytest.raises(PipelineError, match="cannot be exported: GPT block pos_embedding='rope'"):
        export_hf(folder, tmp_path / "hf")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(PipelineError, match=r"export needs transformers: pip install 'llm-pipeline\[hf\]'"):
        export_hf(folder, tmp_path / "hf")
