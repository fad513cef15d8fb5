"""Flat token shards: documents encoded, each followed by EOT, appended to one .bin file.

A shard is a raw numpy array on disk (uint16 when the vocabulary fits, else uint32), read
back with np.memmap, so training never holds the corpus in RAM.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from llm_pipeline.errors import PipelineError


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_batches_to_shard(tokenizer: Tokenizer, batches: Iterable[list[str]], path: Path,
                            dtype: np.dtype, eot: int) -> int:
    """Encode text batches (parallel inside `encode_batch`) and append them to `path`.

    Memory is bounded by one batch. Returns the number of tokens written.
    """
    total = 0
    with open(path, "wb") as fh:
        for texts in batches:
            encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
            ids = [tok for enc in encodings for tok in (*enc.ids, eot)]
            fh.write(np.asarray(ids, dtype=dtype).tobytes())
            total += len(ids)
    return total


def load_shard(path: str | Path, dtype: str | np.dtype) -> np.memmap:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: token shard not found (run the tokenize stage first)")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")
