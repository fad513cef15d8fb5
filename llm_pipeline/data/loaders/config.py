"""What every pretraining batch builder takes: the data knobs from params and the tokenizer folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.resumable import ResumableLoader
from llm_pipeline.data.tokenization.shards import split_shards

SEQ2SEQ_OBJECTIVES = ("span_corruption", "prefix_lm", "denoise")  # what objective_mix may name


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
    # t5: the share of training windows each objective makes (normalised): span_corruption (T5),
    # prefix_lm (read a prefix, write what follows) and denoise (rewrite the whole corrupted input,
    # BART-style: teaches copying from the encoder). Validation is always span_corruption.
    objective_mix: dict[str, float] = Field(default_factory=lambda: {"span_corruption": 1.0})
    val_seed: int = 0  # validation masks/noise are drawn from this seed, the same every evaluation
    seed: int = Field(0, description="training order, window jitter, masks and noise spans derive from it")

    @field_validator("objective_mix")
    @classmethod
    def _known_objectives(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(SEQ2SEQ_OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; known: {', '.join(SEQ2SEQ_OBJECTIVES)}")
        if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {mix}")
        return mix


@dataclass(frozen=True)
class TokenizedCorpus:
    """A tokenize stage output folder: `tokenizer.json`, each split's `.bin` shards, `manifest.json`;
    and where ingest wrote its task tables (the nsp pairs are `<tasks_dir>/nsp/`)."""

    folder: Path
    manifest: dict[str, Any]
    tokenizer: Tokenizer
    tasks_dir: Path
    held_out: str = "val"  # the split the second (validation) loader reads; evaluate scores "test"

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / "tokenizer.json"

    def shards(self, split: str) -> list[Path]:
        """The split's token files, in order (one `<split>.bin` unless tokenize sharded it)."""
        return split_shards(self.folder, split, self.manifest)


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
