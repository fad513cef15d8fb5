"""Flat token shards: documents encoded, each followed by a separator id, appended to one .bin file.

A shard is a raw numpy array on disk (uint16 when the vocabulary fits, else uint32), read
back with np.memmap, so training never holds the corpus in RAM. Encoding and writing stream
one chunk (a batch of documents) at a time, so memory is bounded by a chunk, not the corpus.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from llm_pipeline.errors import PipelineError


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


@contextlib.contextmanager
def special_tokens_as_text(tokenizer: Tokenizer) -> Iterator[Tokenizer]:
    """A document that literally contains e.g. "<|endoftext|>" must not get a separator id
    in the middle of it: while inside, special-token strings in the input encode as text."""
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True
    try:
        yield tokenizer
    finally:
        tokenizer.encode_special_tokens = previous


def encode_chunks(
    tokenizer: Tokenizer, batches: Iterable[list[str]], sep: int, dtype: np.dtype
) -> Iterator[np.ndarray]:
    """One flat token array per batch of documents, each document followed by `sep`.

    The documents of a batch are encoded in parallel on all cores (rayon threads inside
    `tokenizers`, which releases the GIL). Pipelined: while batch k+1 encodes in the background,
    batch k is flattened and yielded and the next batch is read, so this Python-side work hides
    behind the encoding. Lazy and bounded: at most one batch is read ahead of the one yielded.
    """
    # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we never use
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    with special_tokens_as_text(tokenizer), ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for texts in batches:
            submitted = pool.submit(encode, texts, add_special_tokens=False)
            if pending is not None:
                yield _flatten(pending.result(), sep, dtype)
            pending = submitted
        if pending is not None:
            yield _flatten(pending.result(), sep, dtype)


def _flatten(encodings: list[Encoding], sep: int, dtype: np.dtype) -> np.ndarray:
    flat: list[int] = []
    for encoding in encodings:
        flat.extend(encoding.ids)
        flat.append(sep)
    return np.array(flat, dtype=dtype)


def write_shard(chunks: Iterable[np.ndarray], path: str | Path) -> int:
    """Append each chunk to `path` as it arrives (holding one at a time); return the token count."""
    total = 0
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk.data)  # the array's buffer, as memoryview(chunk)
            total += len(chunk)
    return total


def iter_documents(shard: np.ndarray, sep: int, window: int = 1 << 22) -> Iterator[np.ndarray]:
    """The documents of a shard (views, separators dropped), scanning `window` tokens at a time."""
    start = 0
    for offset in range(0, len(shard), window):
        for cut in np.flatnonzero(np.asarray(shard[offset : offset + window]) == sep) + offset:
            yield shard[start:cut]
            start = int(cut) + 1


def load_shard(path: str | Path, dtype: npt.DTypeLike) -> np.memmap:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: token shard not found (run the tokenize stage first)")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")
