import pandas as pd
import pytest
from tokenizers import Tokenizer

from llm_pipeline.data.loaders.seq2seq import Seq2SeqFormat, encode_pairs, encode_pairs_counted
from llm_pipeline.data.tokenization.tokenizer import end_id
from llm_pipeline.errors import PipelineError
from tests.conftest import make_documents
from tests.unit.model_folders import tokenizer_json

LONG = " ".join(make_documents(4, seed=1))  # ~200 words: far over the budgets below
SHORT = "Tools for the archive."


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.from_str(tokenizer_json("bpe"))  # byte-level, as GPT's


@pytest.fixture(scope="module")
def unigram():
    return Tokenizer.from_str(tokenizer_json("unigram"))  # T5's


def frame(*inputs: str, target: str = "a short summary", **columns: str | list[str]) -> pd.DataFrame:
    return pd.DataFrame({"input": list(inputs), "target": target, **columns})


def encoded(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def test_prompted_long_input_keeps_the_cue(bpe):
    fmt = Seq2SeqFormat(input_template="{input}\nSummary:", target_template=" {target}", max_source_len=24)
    (pair,) = encode_pairs(bpe, frame(LONG), fmt, "prompted", end_id(bpe), "t.parquet")
    text = bpe.decode(pair.source)
    assert len(pair.source) <= 24 and text.endswith("\nSummary:")
    assert LONG.startswith(text.removesuffix("\nSummary:"))  # the head of the input, cut by tokens
    assert len(pair.source) >= 22  # the budget is used, not wasted


def test_encoder_decoder_long_input_keeps_the_prefix_and_ends_with_end_id(unigram):
    fmt = Seq2SeqFormat(input_template="summarize: {input}", max_source_len=20)
    stop = end_id(unigram)
    (pair,) = encode_pairs(unigram, frame(LONG), fmt, "encoder_decoder", stop, "t.parquet")
    assert len(pair.source) <= 20 and pair.source[-1] == stop
    head = encoded(unigram, "summarize: " + LONG.split()[0])  # (the tiny vocabulary lacks "z" and ":")
    assert pair.source[: len(head)] == head


def test_per_row_columns_share_the_budget(bpe):
    fmt = Seq2SeqFormat(input_template="translate English to {lang}: {input}\nAnswer:", max_source_len=64)
    rows = frame(LONG, LONG, lang=["German", "Old High German"])
    for pair in encode_pairs(bpe, rows, fmt, "prompted", end_id(bpe), "t.parquet"):
        assert len(pair.source) <= 64 and bpe.decode(pair.source).endswith("\nAnswer:")


@pytest.mark.parametrize("style", ["prompted", "encoder_decoder"])
def test_short_input_is_encoded_as_before(bpe, style):
    fmt = Seq2SeqFormat(input_template="Question: {input}\nAnswer:", target_template=" {target}")
    stop = end_id(bpe)
    (pair,) = encode_pairs(bpe, frame(SHORT), fmt, style, stop, "t.parquet")
    ids = encoded(bpe, f"Question: {SHORT}\nAnswer:")
    assert pair.source == (ids + [stop] if style == "encoder_decoder" else ids)
    assert pair.target == encoded(bpe, " a short summary") + [stop]


def test_without_an_input_field_the_head_is_kept(bpe):
    fmt = Seq2SeqFormat(input_template="{question}?", max_source_len=8)
    rows = frame(SHORT, question=LONG)
    (pair,) = encode_pairs(bpe, rows, fmt, "prompted", end_id(bpe), "t.parquet")
    assert pair.source == encoded(bpe, LONG + "?")[:8]


def test_truncation_is_counted_per_side_and_flagged_per_pair(bpe):
    fmt = Seq2SeqFormat(input_template="{input}\nSummary:", max_source_len=24, max_target_len=4)
    rows = pd.DataFrame({"input": [LONG, SHORT, LONG, SHORT], "target": ["ok", LONG, "fine", "ok"]})
    result = encode_pairs_counted(bpe, rows, fmt, "prompted", end_id(bpe), "t.parquet")
    assert (result.sources_truncated, result.targets_truncated) == (2, 1)
    assert len(result.pairs) == 4 and all(len(p.target) <= 4 for p in result.pairs)
    assert result.cut == [True, True, True, False]  # source, target, source cut; the last fits
    assert result.whole() == [result.pairs[3]]


def test_a_template_with_no_room_for_the_input_is_one_line(bpe):
    template = "{input}\nSummarize the text above in one short plain sentence:"
    fmt = Seq2SeqFormat(input_template=template, max_source_len=6)
    with pytest.raises(PipelineError, match=r"t\.parquet: input template .*Summarize.* max_source_len 6") as err:
        encode_pairs(bpe, frame(SHORT), fmt, "prompted", end_id(bpe), "t.parquet")
    assert "\n" not in str(err.value)
