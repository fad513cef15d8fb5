"""Flat token shards: documents encoded, each followed by a separator id, appended to .bin files.

A shard is a raw numpy array on disk (uint16 when the vocabulary fits, else uint32), read
back with np.memmap, so training never holds the corpus in RAM. Encoding and writing stream
one chunk (a batch of documents) at a time, so memory is bounded by a chunk, not the corpus.
A split is one file, `<split>.bin`, or with tokenize's `max_shard_tokens` several,
`<split>-00000.bin`, ... (listed in the folder's manifest under `shards`); `TokenShards` reads
either as one sequence of tokens.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
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


def write_shards(
    chunks: Iterable[np.ndarray], folder: Path, split: str, max_tokens: int | None
) -> tuple[list[str], int]:
    """The split's chunks as `<split>.bin` (max_tokens None) or as `<split>-NNNNN.bin` files of
    about max_tokens each; returns (file names, token count). A new file starts between chunks,
    so no document is cut and a file can pass max_tokens by one chunk."""
    if max_tokens is None:
        return [f"{split}.bin"], write_shard(chunks, folder / f"{split}.bin")
    names: list[str] = []
    total = 0
    stream = iter(chunks)
    pending = next(stream, None)
    while pending is not None or not names:  # an empty split is still one (empty) file
        names.append(f"{split}-{len(names):05d}.bin")
        in_file = 0
        with open(folder / names[-1], "wb") as fh:
            while pending is not None and (in_file == 0 or in_file < max_tokens):
                fh.write(pending.data)
                in_file += len(pending)
                total += len(pending)
                pending = next(stream, None)
    return names, total


def split_shards(folder: Path, split: str, manifest: dict | None = None) -> list[Path]:
    """The shard files of `split` in a tokenize folder, in order (its manifest's `shards`, else
    the one `<split>.bin`)."""
    if manifest is None:
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
    names = (manifest.get("shards") or {}).get(split) or [f"{split}.bin"]
    return [folder / name for name in names]


def count_tokens(path: Path, dtype: np.dtype) -> int:
    if not path.is_file():
        raise PipelineError(f"{path}: token file not found (run the tokenize stage first)")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise PipelineError(f"{path}: {size} bytes is not a whole number of {dtype} tokens; wrong dtype?")
    return size // dtype.itemsize


class TokenShards:
    """A split's tokens across its shard files, as one sequence: len() and [start:stop] (an
    ndarray: a memmap view within one file, a copy across files), np.asarray() for all of it.
    Files are mapped on first use, and not pickled (DataLoader workers map their own)."""

    def __init__(self, paths: Sequence[Path], dtype: npt.DTypeLike) -> None:
        if not paths:
            raise PipelineError("no token shard files given")
        self.paths = [Path(p) for p in paths]
        self.dtype = np.dtype(dtype)
        self.starts = np.cumsum([0, *(count_tokens(p, self.dtype) for p in self.paths)])  # file k: starts[k]..[k+1]
        self._maps: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _files(self) -> list[np.ndarray]:
        if self._maps is None:
            # an empty file cannot be memory-mapped
            self._maps = [
                np.memmap(p, dtype=self.dtype, mode="r") if n else np.empty(0, self.dtype)
                for p, n in zip(self.paths, np.diff(self.starts), strict=True)
            ]
        return self._maps

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("TokenShards take [start:stop] slices")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("TokenShards take contiguous slices")
        files, parts = self._files(), []
        k = max(int(np.searchsorted(self.starts, start, side="right")) - 1, 0)
        while start < stop:
            end = min(stop, int(self.starts[k + 1]))
            if end > start:
                parts.append(files[k][start - self.starts[k] : end - self.starts[k]])
            start, k = end, k + 1
        if not parts:
            return np.empty(0, self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        whole = self[0 : len(self)]
        return whole if dtype is None else whole.astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}


def iter_documents(shard: np.ndarray | TokenShards, sep: int, window: int = 1 << 22) -> Iterator[np.ndarray]:
    """The documents of a shard (views, separators dropped), scanning `window` tokens at a time."""
    start = 0
    for offset in range(0, len(shard), window):
        for cut in np.flatnonzero(np.asarray(shard[offset : offset + window]) == sep) + offset:
            yield shard[start:cut]
            start = int(cut) + 1
