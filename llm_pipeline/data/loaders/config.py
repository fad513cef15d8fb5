"""What every pretraining batch builder takes: the data knobs from params and the tokenizer folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.resumable import ResumableLoader


class PretrainDataConfig(StageConfig):
    """Data and objective knobs; the defaults are the papers' (BERT: 15% masked; T5: 15% noise, spans of 3)."""

    seq_len: int | None = Field(
        None, gt=0, description="input length; None: the family's default (the model's maximum, t5: 128)"
    )
    batch_size: int = Field(16, gt=0, description="sequences per device per micro-batch")
    num_workers: int = Field(0, ge=0)
    samples_per_epoch: int | None = Field(None, gt=0, description="gpt/t5 training windows per epoch")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    noise_density: float = Field(0.15, gt=0, lt=1)
    mean_noise_span_length: float = Field(3.0, ge=1)
    val_seed: int = 0  # validation masks/noise are drawn from this seed, the same every evaluation
    seed: int = Field(0, description="training order, window jitter, masks and noise spans derive from it")


@dataclass(frozen=True)
class TokenizedCorpus:
    """A tokenize stage output folder: `tokenizer.json`, `{train,val,test}.bin` shards, `manifest.json`;
    and where ingest wrote its task tables (the nsp pairs are `<tasks_dir>/nsp/`)."""

    folder: Path
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    tasks_dir: Path
    held_out: str = "val"  # the split the second (validation) loader reads; evaluate scores "test"

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / "tokenizer.json"

    def shard(self, split: str) -> Path:
        return self.folder / f"{split}.bin"


def build_loaders(train: Dataset, val: Dataset, data: PretrainDataConfig, collate) -> tuple[DataLoader, DataLoader]:
    """Training: resumable, shuffled, the last partial batch dropped; validation: every example, in order."""
    return (
        ResumableLoader(train, data.batch_size, data.seed, collate, data.num_workers),
        build_eval_loader(val, data.batch_size, collate, data.num_workers),
    )


def build_eval_loader(dataset: Dataset, batch_size: int, collate=None, num_workers: int = 0) -> DataLoader:
    """In order, every example; its own generator, so iterating it leaves torch's global RNG alone
    (a resumed run's dropout draws what an uninterrupted run's did, validation or not)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
    )
