"""The three tokenizer kinds: special tokens, post-processing, byte-level round-trip."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from llm_pipeline.data.tokenization.shards import special_tokens_as_text
from llm_pipeline.data.tokenization.tokenizer import (
    EOT,
    TokenizerSpec,
    load_tokenizer,
    separator_token,
    special_tokens,
    train_tokenizer,
)
from tests.conftest import make_documents

# unicode from several scripts, emoji, combining marks, tabs, newlines and runs of spaces
AWKWARD = [
    "Grüße aus Köln — ça va?  Ελληνικά, русский, 日本語, عربي.",
    "line one\nline two\n\n\tindented   three   spaces  \r\nend ",
    "  leading and trailing spaces  ",
    "emoji 👩‍💻 and e\u0301 (combining) and ﬁ ligature",
    "<|endoftext|> written inside a document",
    "",
]


def spec(**data) -> TokenizerSpec:
    return TypeAdapter(TokenizerSpec).validate_python(data)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_documents(200, seed=3) + AWKWARD * 5


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Each kind trained on the tiny corpus, saved and reloaded (what downstream stages see)."""
    out = {}
    for s in (
        spec(kind="bpe", vocab_size=300),
        spec(kind="wordpiece", vocab_size=200),
        spec(kind="unigram", vocab_size=150, extra_ids=5),
    ):
        path = tmp_path_factory.mktemp(s.kind) / "tokenizer.json"
        train_tokenizer(s, lambda: corpus).save(str(path))
        out[s.kind] = (s, load_tokenizer(path))
    return out


def test_byte_level_bpe_round_trips_every_document(trained, corpus):
    _, tok = trained["bpe"]
    texts = corpus + ["never seen: ☃ ẞ 𝄞 \x00 \u200b  \n"]
    with special_tokens_as_text(tok):  # as the shards encode: a literal "<|endoftext|>" is text
        encoded = tok.encode_batch(texts, add_special_tokens=False)
    assert tok.decode_batch([e.ids for e in encoded]) == texts
    assert tok.token_to_id(EOT) == 0 and tok.get_vocab_size() <= 300


def test_wordpiece_has_bert_specials_and_cls_sep_templates(trained):
    s, tok = trained["wordpiece"]
    assert [tok.token_to_id(t) for t in special_tokens(s).values()] == [0, 1, 2, 3, 4]
    single = tok.encode("The Package")
    assert single.tokens[0] == "[CLS]" and single.tokens[-1] == "[SEP]"
    assert "the" in single.tokens  # BERT normalizer lowercases (bert-base-uncased)
    pair = tok.encode("the package", "a library")
    assert pair.tokens == ["[CLS]", "the", "package", "[SEP]", "a", "library", "[SEP]"]
    assert pair.type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert tok.encode("the package", add_special_tokens=False).tokens == ["the", "package"]
    assert separator_token(s) == "[SEP]"


def test_unigram_has_t5_specials_sentinels_and_appends_eos(trained):
    s, tok = trained["unigram"]
    assert [tok.token_to_id(t) for t in ("<pad>", "</s>", "<unk>")] == [0, 1, 2]
    assert all(tok.token_to_id(f"<extra_id_{i}>") is not None for i in range(5))
    assert tok.token_to_id("<extra_id_5>") is None
    enc = tok.encode("the package provides")
    assert enc.tokens[-1] == "</s>" and enc.tokens[0].startswith("▁")  # Metaspace word marker
    assert tok.encode("a <extra_id_3> b", add_special_tokens=False).tokens.count("<extra_id_3>") == 1
    assert tok.decode(tok.encode("the package provides").ids) == "the package provides"
    assert separator_token(s) == "</s>"


def test_spec_rejects_options_of_another_kind_and_too_small_vocab():
    with pytest.raises(ValueError, match="extra_ids"):
        spec(kind="bpe", extra_ids=3)
    with pytest.raises(ValueError, match="no room"):
        spec(kind="unigram", vocab_size=100, extra_ids=100)


TRAIN_AND_HASH = """
import hashlib, json, sys
from pydantic import TypeAdapter
from llm_pipeline.data.tokenization.tokenizer import TokenizerSpec, train_tokenizer
from tests.conftest import make_documents
from tests.unit.data.tokenization.test_tokenizer import AWKWARD
corpus = make_documents(200, seed=3) + AWKWARD * 5
specs = [{"kind": "bpe", "vocab_size": 300}, {"kind": "wordpiece", "vocab_size": 200},
         {"kind": "unigram", "vocab_size": 150, "extra_ids": 5}]
print(json.dumps({s["kind"]: hashlib.sha256(train_tokenizer(TypeAdapter(TokenizerSpec).validate_python(s),
      lambda: corpus).to_str().encode()).hexdigest() for s in specs}))
"""


def test_every_kind_trains_to_the_same_bytes_in_another_process():
    """Each process seeds Rust's hash maps anew: before canonical_form and the declared `##`
    symbols, WordPiece learnt other vocabularies and Unigram gave its pieces other ids and
    scores in every process (seen)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[4]
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", TRAIN_AND_HASH], cwd=repo, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]


def test_canonical_form_keeps_the_specials_and_numbers_every_token_once(trained):
    for kind in ("wordpiece", "unigram"):
        s, tok = trained[kind]
        vocab = tok.get_vocab()
        assert sorted(vocab.values()) == list(range(len(vocab))), kind
        assert [tok.token_to_id(t) for t in special_tokens(s).values()] == list(range(len(special_tokens(s)))), kind
    # the `##c` symbols are plain vocabulary, not added tokens: a literal "##e" is text
    _, wordpiece = trained["wordpiece"]
    assert "##e" in wordpiece.get_vocab()
    assert "##e" not in wordpiece.encode("x ##e", add_special_tokens=False).tokens
