"""Shards stream: one chunk in memory at a time, separators only between documents."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from tokenizers import Tokenizer

from llm_pipeline.data.tokenization.shards import encode_chunks, iter_documents, load_shard, token_dtype, write_shard
from llm_pipeline.data.tokenization.tokenizer import EOT, BpeSpec, train_tokenizer
from llm_pipeline.errors import PipelineError
from tests.conftest import make_documents


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return train_tokenizer(BpeSpec(kind="bpe", vocab_size=300), lambda: make_documents(100))


def test_writer_holds_one_chunk_and_reads_one_batch_ahead_at_most(bpe, tmp_path):
    """A corpus of 40 chunks streams through: when chunk k is made, chunks before k-1 are freed
    and batches 0..k+1 at most have been read (k+1 encoding in the background) -- memory is a
    couple of chunks, not the corpus."""
    pulled: list[int] = []
    made: list[weakref.ref[np.ndarray]] = []

    def batches():
        for k in range(40):
            pulled.append(k)
            yield make_documents(5, seed=k)

    def watched(chunks):
        for chunk in chunks:
            assert len(pulled) <= len(made) + 2  # at most one batch read ahead
            assert all(ref() is None for ref in made[:-1])  # the writer kept no old chunk
            made.append(weakref.ref(chunk))
            yield chunk
            del chunk

    sep = bpe.token_to_id(EOT)
    total = write_shard(watched(encode_chunks(bpe, batches(), sep, np.dtype(np.uint16))), tmp_path / "s.bin")
    shard = load_shard(tmp_path / "s.bin", "uint16")
    assert len(made) == 40 and total == len(shard)
    assert int((shard == sep).sum()) == 200 and shard[-1] == sep


def test_documents_decode_back_in_order_even_with_a_literal_separator(bpe, tmp_path):
    docs = ["first doc", f"a doc that mentions {EOT} in its text", "", "last\n"]
    sep = bpe.token_to_id(EOT)
    write_shard(encode_chunks(bpe, [docs[:3], docs[3:]], sep, np.dtype(np.uint16)), tmp_path / "s.bin")
    shard = load_shard(tmp_path / "s.bin", np.uint16)
    assert int((shard == sep).sum()) == len(docs)  # one separator per document, none inside
    decoded = [bpe.decode(d.tolist()) for d in iter_documents(shard, sep, window=3)]  # windows cut docs
    assert decoded == docs
    assert bpe.encode_special_tokens is False  # the flag is restored after encoding


def test_dtype_follows_vocabulary_size_and_missing_shard_is_named(tmp_path):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    with pytest.raises(PipelineError, match="nope.bin: token shard not found"):
        load_shard(tmp_path / "nope.bin", "uint16")
