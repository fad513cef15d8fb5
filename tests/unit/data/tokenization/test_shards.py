"""Shards stream: one chunk in memory at a time, separators only between documents."""

from __future__ import annotations

import pickle
import weakref

import numpy as np
import pytest
from tokenizers import Tokenizer

from llm_pipeline.data.tokenization.shards import (
    TokenShards,
    encode_chunks,
    iter_documents,
    split_shards,
    token_dtype,
    write_shard,
    write_shards,
)
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
    shard = np.asarray(TokenShards([tmp_path / "s.bin"], "uint16"))
    assert len(made) == 40 and total == len(shard)
    assert int((shard == sep).sum()) == 200 and shard[-1] == sep


def test_documents_decode_back_in_order_even_with_a_literal_separator(bpe, tmp_path):
    docs = ["first doc", f"a doc that mentions {EOT} in its text", "", "last\n"]
    sep = bpe.token_to_id(EOT)
    write_shard(encode_chunks(bpe, [docs[:3], docs[3:]], sep, np.dtype(np.uint16)), tmp_path / "s.bin")
    shard = np.asarray(TokenShards([tmp_path / "s.bin"], np.uint16))
    assert int((shard == sep).sum()) == len(docs)  # one separator per document, none inside
    decoded = [bpe.decode(d.tolist()) for d in iter_documents(shard, sep, window=3)]  # windows cut docs
    assert decoded == docs
    assert bpe.encode_special_tokens is False  # the flag is restored after encoding


def test_dtype_follows_vocabulary_size_and_missing_shard_is_named(tmp_path):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    with pytest.raises(PipelineError, match="nope.bin: token file not found"):
        TokenShards([tmp_path / "nope.bin"], "uint16")


@pytest.mark.parametrize("seed", range(4))
def test_a_split_in_several_files_reads_as_the_one_file_would(tmp_path, seed):
    rng = np.random.default_rng(seed)
    chunks = [rng.integers(0, 60000, rng.integers(0, 50)).astype(np.uint16) for _ in range(rng.integers(1, 30))]
    whole = np.concatenate(chunks)
    max_tokens = int(rng.integers(1, 120))
    names, total = write_shards(iter(chunks), tmp_path, "train", max_tokens)
    assert total == len(whole) and names[0] == "train-00000.bin"
    sizes = [(tmp_path / n).stat().st_size // 2 for n in names]
    # a new file starts between chunks, once the last one has max_tokens or more
    assert all(size >= max_tokens for size in sizes[:-1]) and sum(sizes) == total
    shards = TokenShards([tmp_path / n for n in names], "uint16")
    assert len(shards) == len(whole)
    for _ in range(50):  # any slice, across file boundaries too
        a, b = sorted(rng.integers(0, len(whole) + 1, 2).tolist())
        assert shards[a:b].tolist() == whole[a:b].tolist()
    assert np.asarray(shards, dtype=np.int64).tolist() == whole.tolist()
    assert pickle.loads(pickle.dumps(shards))[0 : len(whole)].tolist() == whole.tolist()  # workers map their own


def test_unsharded_splits_keep_their_one_file_name(tmp_path):
    names, total = write_shards(iter([np.arange(5, dtype=np.uint16)]), tmp_path, "val", None)
    assert names == ["val.bin"] and total == 5
    assert split_shards(tmp_path, "val") == [tmp_path / "val.bin"]  # no manifest: the one file
    assert write_shards(iter([]), tmp_path, "test", 10) == (["test-00000.bin"], 0)  # empty: one empty file
    manifest = {"shards": {"train": ["train-00000.bin", "train-00001.bin"]}}
    assert split_shards(tmp_path, "train", manifest) == [tmp_path / "train-00000.bin", tmp_path / "train-00001.bin"]
    assert split_shards(tmp_path, "val", manifest) == [tmp_path / "val.bin"]
