"""Language-model batches from the flat token files written by the tokenize stage.

A split's token files are 1-D numpy arrays on disk (documents concatenated, each ending in
the end-of-text id), read as one sequence (data/tokenization/shards.py). A sample is a window
of block_size + 1 tokens: x is the first block_size, y the same window shifted by one, so y[t]
is the token that follows x[t].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus, build_eval_loader
from llm_pipeline.data.loaders.resumable import ResumableLoader
from llm_pipeline.data.tokenization.shards import TokenShards, split_shards
from llm_pipeline.errors import PipelineError


class TokenWindowDataset(Dataset):
    """Windows of a memmapped token file.

    The file is cut into chunks of block_size tokens; item i is the window that starts in
    chunk i % num_windows.
    random=True (training): the start is jittered by a random 0..block_size-1 tokens, so each
    epoch sees new alignments. The jitter is drawn from the generator `item` is given (the
    ResumableLoader seeds it from the draw's epoch and position, so a resumed run and every DDP
    rank see the windows an uninterrupted 1-process run would). `samples_per_epoch` sets the
    epoch length (default: one pass over the file).
    random=False (val/test): the windows share only their boundary token, so every token is
    predicted exactly once and the result is reproducible.
    """

    def __init__(
        self,
        path: str | Path | Sequence[Path],  # one shard file, or a split's shard files in order
        dtype: str | np.dtype,
        block_size: int,
        random: bool,
        samples_per_epoch: int | None = None,
    ) -> None:
        paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
        self.path = paths[0] if len(paths) == 1 else paths[0].parent / f"{paths[0].name} .. {paths[-1].name}"
        self.dtype = np.dtype(dtype)
        self.block_size = block_size
        self.random = random
        self._tokens = TokenShards(paths, self.dtype)  # maps its files on first read, not pickled to workers
        self.num_tokens = len(self._tokens)
        if self.num_tokens < block_size + 1:
            raise PipelineError(f"{self.path}: {self.num_tokens} tokens, fewer than block_size + 1 = {block_size + 1}")
        self.num_windows = (self.num_tokens - 1) // block_size
        self.samples_per_epoch = samples_per_epoch or self.num_windows

    def __len__(self) -> int:
        return self.samples_per_epoch if self.random else self.num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item(index, None)

    def item(self, index: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.window(index, generator)  # (T + 1,)
        return window[:-1], window[1:]  # x (T,), y (T,)

    def window(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The block_size + 1 raw tokens of item `index`, int64 (random: jittered with `generator`)."""
        start = (index % self.num_windows) * self.block_size
        if self.random:
            jitter = int(torch.randint(self.block_size, (1,), generator=generator))
            start = min(start + jitter, self.num_tokens - self.block_size - 1)
        return torch.from_numpy(self._tokens[start : start + self.block_size + 1].astype(np.int64))


def build_lm_dataloaders(
    shard_dir: str | Path,
    dtype: str | np.dtype,
    block_size: int,
    batch_size: int,
    num_workers: int = 0,
    samples_per_epoch: int | None = None,
    held_out: str = "val",
    seed: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders over `<shard_dir>`'s train shards (shuffled, jittered) and `held_out` ones (sequential)."""
    shard_dir = Path(shard_dir)
    train = TokenWindowDataset(split_shards(shard_dir, "train"), dtype, block_size, True, samples_per_epoch)
    val = TokenWindowDataset(split_shards(shard_dir, held_out), dtype, block_size, False)
    return (
        ResumableLoader(train, batch_size, seed, num_workers=num_workers),
        build_eval_loader(val, batch_size, num_workers=num_workers),
    )


def build_causal_lm_loaders(
    corpus: TokenizedCorpus, data: PretrainDataConfig, seq_len: int
) -> tuple[DataLoader, DataLoader]:
    """GPT pretraining batches: random windows of the train shard, fixed windows of the val shard."""
    return build_lm_dataloaders(
        corpus.folder,
        corpus.manifest["dtype"],
        seq_len,
        data.batch_size,
        data.num_workers,
        data.samples_per_epoch,
        corpus.held_out,
        data.seed,
    )
