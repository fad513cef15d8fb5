"""T5 pretraining batches: span-corrupted windows of a token shard (llm_pipeline.data.span_corruption).

The window length is chosen (T5's recipe) so that the corrupted input is exactly
`inputs_length` tokens; the decoder reads the target shifted right behind a start token
(T5 uses the pad id), and learns to predict the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from llm_pipeline.data.masking import IGNORE_INDEX
from llm_pipeline.data.span_corruption import SpanCorruptionConfig, compute_raw_length, corrupt_spans
from llm_pipeline.data.token_data import TokenWindowDataset


class SpanCorruptionDataset(Dataset):
    """Items: (inputs (I,), targets (J,)) from raw windows of the token file at `path`.

    random=True (training): jittered windows, a fresh noise mask per read.
    random=False (validation): fixed windows, and item i always gets the same mask (seed + i).
    """

    def __init__(self, path: str | Path, dtype: str | np.dtype, inputs_length: int, cfg: SpanCorruptionConfig,
                 random: bool, samples_per_epoch: int | None = None, seed: int = 0) -> None:
        self.raw_length, self.targets_length = compute_raw_length(
            inputs_length, cfg.noise_density, cfg.mean_noise_span_length)
        # a TokenWindowDataset item spans block_size + 1 tokens
        self.windows = TokenWindowDataset(path, dtype, self.raw_length - 1, random, samples_per_epoch)
        self.cfg = cfg
        self.seed = seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = None if self.windows.random else torch.Generator().manual_seed(self.seed + index)
        return corrupt_spans(self.windows.window(index), self.cfg, generator)


def collate_span_corruption(items: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int
                            ) -> dict[str, torch.Tensor]:
    """Right-pad -> input_ids, attention_mask (B, I); decoder_input_ids, labels (B, J).

    labels are IGNORE_INDEX on padding; decoder_input_ids = [pad_id] + labels[:-1].
    """
    inputs = _pad([x for x, _ in items], pad_id)  # (B, I)
    labels = _pad([y for _, y in items], IGNORE_INDEX)  # (B, J)
    decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], pad_id), labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == IGNORE_INDEX, pad_id)
    return {"input_ids": inputs, "attention_mask": _pad([torch.ones_like(x) for x, _ in items], 0),
            "decoder_input_ids": decoder_input_ids, "labels": labels}


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)
