"""Models people can use: a model folder predicts texts or labels (llm_pipeline.inference), and every
registered model is an MLflow pyfunc that predicts the same through `mlflow.pyfunc.load_model`."""

from __future__ import annotations

import random
from typing import Any, cast

import pandas as pd
import pytest
import torch

from llm_pipeline import inference
from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.registry import PYFUNC_PARAMS, load_registered_model, registered_versions
from llm_pipeline.tracking.runs import stage_run
from tests.conftest import WORDS
from tests.unit.model_folders import write_model_folder


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(n)]


@pytest.mark.parametrize("family", ["bert", "gpt", "t5"])
def test_a_classifier_returns_the_label_its_head_scores_highest(tmp_path, family):
    folder = write_model_folder(tmp_path / "m", family, kind="classification", labels=["x", "y", "z"], seed=1)
    loaded = inference.load_model_folder(folder)
    rows = texts(12, seed=2)
    with torch.no_grad():
        head = loaded.model.head
        head.bias.copy_(torch.randn(3, generator=torch.Generator().manual_seed(4)) * 3)  # varied labels
        want = []
        for text in rows:  # encoded as fine-tuning encodes: specials, the first max_len tokens
            ids = torch.tensor([loaded.tokenizer.encode(text).ids[:24]])
            logits = loaded.model(ids, torch.ones_like(ids)).logits[0]
            want.append("xyz"[int(logits.argmax())])
    assert inference.predict(loaded, pd.DataFrame({"text": rows}), inference.build_options({})) == want


def test_seq2seq_formats_the_row_with_the_fine_tunes_template_and_decodes_like_evaluate(tmp_path):
    fmt = {"input_template": "to {lang}: {input}", "max_source_len": 24, "max_target_len": 6}
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "t5", kind="seq2seq", fmt=fmt, seed=3))
    rows = pd.DataFrame({"text": texts(3, seed=5), "lang": ["de", "fr", "it"]})
    tok, model = loaded.tokenizer, cast(Any, loaded.model)
    want = []
    for text, lang in zip(rows["text"], rows["lang"]):
        source = tok.encode(f"to {lang}: {text}", add_special_tokens=False).ids[:23] + [1]  # then </s>
        out = model.generate(torch.tensor([source]), 6, num_beams=4, no_repeat_ngram_size=3, stop_ids=(1,))
        ids = out[0].tolist()
        want.append(tok.decode(ids[: ids.index(1)] if 1 in ids else ids).strip())
    assert inference.predict(loaded, rows) == want
    with pytest.raises(PipelineError, match="lang"):  # the template names a column the rows lack
        inference.predict(loaded, rows[["text"]])


@pytest.mark.parametrize("kind", [None, "generation"])
def test_gpt_continues_the_text_and_streams_exactly_what_it_returns(tmp_path, kind):
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "gpt", kind=kind, seed=6))
    prompt = "the package provides"
    ids = loaded.tokenizer.encode(prompt, add_special_tokens=False).ids
    out = cast(Any, loaded.model).generate(torch.tensor([ids]), 7, stop_ids=(0,))[0].tolist()
    want = loaded.tokenizer.decode(out[: out.index(0)] if 0 in out else out)
    pieces: list[str] = []
    options = inference.build_options({"max_new_tokens": 7})
    got = inference.complete(loaded, {"text": prompt}, options, on_text=pieces.append)
    assert got == want == "".join(pieces)
    assert inference.predict(loaded, pd.DataFrame({"text": [prompt]}), options) == [want]
    sampled = inference.build_options({"max_new_tokens": 7, "temperature": 1.0, "seed": 9})
    assert inference.complete(loaded, {"text": prompt}, sampled) == inference.complete(
        loaded, {"text": prompt}, sampled
    )  # seeded


def test_pretrained_t5_fills_its_sentinels_and_continues_a_text_without_one(tmp_path):
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "t5", seed=7))
    [filled] = inference.predict(loaded, pd.DataFrame({"text": ["the package <extra_id_0> data files"]}))
    assert "<extra_id_0>" not in filled
    assert filled.startswith("the package ") and filled.endswith(" data files")
    tok, model = loaded.tokenizer, cast(Any, loaded.model)
    s0, s1 = tok.token_to_id("<extra_id_0>"), tok.token_to_id("<extra_id_1>")
    source = tok.encode("the package provides", add_special_tokens=False).ids + [s0, 1]
    out = model.generate(torch.tensor([source]), 40, stop_ids=(1, s1))[0].tolist()
    span = out[1 : next((i for i, t in enumerate(out) if t in (1, s1)), len(out))] if out[0] == s0 else []
    assert inference.predict(loaded, pd.DataFrame({"text": ["the package provides"]})) == [tok.decode(span)]


def test_pretrained_bert_puts_its_most_likely_word_at_each_mask(tmp_path):
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "bert", seed=8))
    tok = loaded.tokenizer
    [filled] = inference.predict(loaded, pd.DataFrame({"text": ["the [MASK] provides a library"]}))
    ids = tok.encode("the [MASK] provides a library").ids
    at = ids.index(tok.get_vocab()["[MASK]"])
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0, at]
    logits[[tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]] = float("-inf")
    assert filled == f"the {tok.id_to_token(int(logits.argmax()))} provides a library".replace(" ##", "")


def test_a_prompt_longer_than_the_context_is_one_line_naming_both_lengths(tmp_path):
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "gpt", block_size=16))
    long_prompt = " ".join(["the package provides a library"] * 10)
    n = len(loaded.tokenizer.encode(long_prompt, add_special_tokens=False).ids)
    with pytest.raises(PipelineError, match=f"the prompt is {n} tokens, longer than the model's context of 16 tokens"):
        inference.complete(loaded, {"text": long_prompt})


def test_bad_input_and_options_are_one_line(tmp_path):
    loaded = inference.load_model_folder(write_model_folder(tmp_path / "m", "bert", kind="classification"))
    with pytest.raises(PipelineError, match="no 'text' column"):
        inference.predict(loaded, pd.DataFrame({"sentence": ["a"]}))
    for blank in ("", "  ", None):
        with pytest.raises(PipelineError, match=r"^row 1: empty 'text' \(1 of 3 rows\); every row needs text$"):
            inference.predict(loaded, pd.DataFrame({"text": ["a", blank, "b"]}))
    with pytest.raises(PipelineError, match="decoding option temperature"):
        inference.build_options({"temperature": -1})
    with pytest.raises(PipelineError, match="does not write text"):
        inference.complete(loaded, {"text": "a"})


def test_the_pyfunc_params_are_decoding_options():
    assert set(PYFUNC_PARAMS) <= set(inference.PredictOptions.model_fields)


@pytest.mark.parametrize(
    ("family", "kind", "fmt"),
    [
        ("gpt", None, None),
        ("bert", "classification", None),
        ("gpt", "seq2seq", {"input_template": "{input}\nFirst:", "target_template": " {target}"}),
    ],
)
def test_a_registered_model_is_a_pyfunc_that_predicts_what_its_folder_does(tracking_dir, family, kind, fmt):
    import mlflow

    folder = write_model_folder(tracking_dir / "m", family, kind=kind, fmt=fmt, seed=11)
    with stage_run("finetune-x") as run:
        version = run.register_model(folder, "test-model", description="tiny", tags={"task": "echo"})
    assert version == "1"
    registered = registered_versions("test-model")[0]
    assert registered.description == "tiny" and registered.tags["task"] == "echo"
    rows = pd.DataFrame({"text": texts(4, seed=12)})
    pyfunc = mlflow.pyfunc.load_model("models:/test-model/1")
    loaded = inference.load_model_folder(folder)
    assert pyfunc.predict(rows) == inference.predict(loaded, rows)
    assert load_registered_model("test-model", 1).predict(rows) == inference.predict(loaded, rows)
    if kind != "classification":  # params reach the decoding
        short = pyfunc.predict(rows, params={"max_new_tokens": 2, "num_beams": 1})
        assert short == inference.predict(loaded, rows, inference.build_options({"max_new_tokens": 2, "num_beams": 1}))
