"""T5 pretraining batches: span-corrupted windows of a token shard (llm_pipeline.data.loaders.span_masking).

The window length is chosen (T5's recipe) so that the corrupted input is exactly
`inputs_length` tokens; the decoder reads the target shifted right behind a start token
(T5 uses the pad id), and learns to predict the target.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.data.loaders.causal_lm import TokenWindowDataset
from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus, build_loaders
from llm_pipeline.data.loaders.masking import IGNORE_INDEX
from llm_pipeline.data.loaders.span_masking import (
    SpanCorruptionConfig,
    compute_raw_length,
    compute_span_counts,
    corrupt_spans,
    denoise,
    prefix_lm,
)
from llm_pipeline.errors import PipelineError


class SpanCorruptionDataset(Dataset):
    """Items: (inputs (I,), targets (J,)) from raw windows of the token file at `path`.

    random=True (training): jittered windows and noise masks drawn from the generator `item`
    is given (the ResumableLoader's, one per draw).
    random=False (validation): fixed windows, and item i always gets the same mask (seed + i).
    """

    def __init__(
        self,
        path: str | Path | Sequence[Path],  # a token file, or a split's token files in order
        dtype: str | np.dtype,
        inputs_length: int,
        cfg: SpanCorruptionConfig,
        random: bool,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        objective_mix: dict[str, float] | None = None,
    ) -> None:
        self.raw_length, self.targets_length = compute_raw_length(
            inputs_length, cfg.noise_density, cfg.mean_noise_span_length
        )
        # a TokenWindowDataset item spans block_size + 1 tokens
        self.windows = TokenWindowDataset(path, dtype, self.raw_length - 1, random, samples_per_epoch)
        self.cfg = cfg
        self.seed = seed
        # training only: which objective each window serves, drawn per window by these weights
        mix = {k: w for k, w in (objective_mix or {"span_corruption": 1.0}).items() if w > 0}
        self.objectives = list(mix)
        self.cumulative = torch.tensor(list(mix.values()), dtype=torch.float64).cumsum(0) / sum(mix.values())
        # prefix_lm and denoise targets are capped at twice span corruption's, so no objective
        # makes the padded decoder batch much longer than T5's own does
        self.max_target = 2 * self.targets_length

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item(index, None if self.windows.random else torch.Generator().manual_seed(self.seed + index))

    def item(self, index: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.windows.window(index, generator)  # (raw_length,)
        objective = self.objective_of(generator) if self.windows.random else "span_corruption"
        if objective == "prefix_lm":
            return prefix_lm(window, self.cfg.eos_id, self.max_target, generator)
        if objective == "denoise":
            return denoise(window, self.cfg, self.max_target, generator)
        return corrupt_spans(window, self.cfg, generator)

    def objective_of(self, generator: torch.Generator | None) -> str:
        if len(self.objectives) == 1:
            return self.objectives[0]  # draws nothing: a pure span-corruption run keeps its RNG stream
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return self.objectives[min(int(torch.searchsorted(self.cumulative, u, right=True)), len(self.objectives) - 1)]


def collate_span_corruption(items: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad -> input_ids, attention_mask (B, I); decoder_input_ids, labels (B, J).

    labels are IGNORE_INDEX on padding; decoder_input_ids = [pad_id] + labels[:-1].
    """
    inputs = _pad([x for x, _ in items], pad_id)  # (B, I)
    labels = _pad([y for _, y in items], IGNORE_INDEX)  # (B, J)
    decoder_input_ids = torch.cat([torch.full_like(labels[:, :1], pad_id), labels[:, :-1]], dim=1)
    decoder_input_ids = decoder_input_ids.masked_fill(decoder_input_ids == IGNORE_INDEX, pad_id)
    return {
        "input_ids": inputs,
        "attention_mask": _pad([torch.ones_like(x) for x, _ in items], 0),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


def _pad(rows: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True, padding_value=value)


def t5_tokenizer_fields(tokenizer: Tokenizer, where: str) -> dict[str, int]:
    """T5's pad id (also its decoder start token) comes from the tokenizer."""
    pad_id = tokenizer.token_to_id("<pad>")
    if pad_id is None:
        raise PipelineError(f"{where}: no <pad> token; T5 needs the unigram tokenizer")
    return {"pad_id": pad_id}


def build_span_corruption_loaders(
    corpus: TokenizedCorpus, data: PretrainDataConfig, seq_len: int
) -> tuple[DataLoader, DataLoader]:
    """T5 pretraining batches: span-corrupted windows of the shards, inputs of `seq_len` tokens."""
    tokenizer, manifest = corpus.tokenizer, corpus.manifest
    pad_id = t5_tokenizer_fields(tokenizer, str(corpus.tokenizer_path))["pad_id"]
    corruption = SpanCorruptionConfig(
        _sentinel_ids(tokenizer, corpus.tokenizer_path),
        manifest["eot_id"],
        data.noise_density,
        data.mean_noise_span_length,
    )
    raw_length, _ = compute_raw_length(seq_len, data.noise_density, data.mean_noise_span_length)
    _, spans = compute_span_counts(raw_length, data.noise_density, data.mean_noise_span_length)
    if spans > len(corruption.sentinel_ids):
        raise PipelineError(
            f"{corpus.tokenizer_path}: {len(corruption.sentinel_ids)} sentinel tokens, "
            f"but inputs of {seq_len} tokens have {spans} noise spans; tokenize with more extra_ids"
        )

    def dataset(split: str, random: bool) -> SpanCorruptionDataset:
        return SpanCorruptionDataset(
            corpus.shards(split),
            manifest["dtype"],
            seq_len,
            corruption,
            random,
            data.samples_per_epoch,
            data.val_seed,
            data.objective_mix,
        )

    collate = functools.partial(collate_span_corruption, pad_id=pad_id)
    return build_loaders(dataset("train", True), dataset(corpus.held_out, False), data, collate)


def _sentinel_ids(tokenizer: Tokenizer, where: Path) -> tuple[int, ...]:
    """Ids of <extra_id_0>, <extra_id_1>, ... as far as the tokenizer has them."""
    ids = []
    for i in itertools.count():
        token_id = tokenizer.token_to_id(f"<extra_id_{i}>")
        if token_id is None:
            break
        ids.append(token_id)
    if not ids:
        raise PipelineError(
            f"{where}: no sentinel tokens <extra_id_0>, ...; "
            "T5 span corruption needs them (tokenize with kind unigram and extra_ids > 0)"
        )
    return tuple(ids)
