"""What pretraining needs per model family: model, objective, and train/val loaders, from one call.

    gpt  -> causal LM over token windows of the bpe shards
    bert -> masked LM + next-sentence prediction over ingest's nsp pairs, wordpiece tokenizer
    t5   -> span corruption over windows of the unigram shards

Everything a user can get wrong (tokenizer kind, vocab size, sequence length, missing
sentinels or special tokens) fails here with a PipelineError, before any training starts.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn
from pydantic import Field
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from llm_pipeline.config import StageConfig
from llm_pipeline.data.masking import MaskingConfig
from llm_pipeline.data.nsp_data import BertSpecialIds, NSPDataset, collate_nsp, load_nsp_pairs
from llm_pipeline.data.span_corruption import SpanCorruptionConfig, compute_raw_length, compute_span_counts
from llm_pipeline.data.span_data import SpanCorruptionDataset, collate_span_corruption
from llm_pipeline.data.token_data import build_lm_dataloaders
from llm_pipeline.data.tokenizer import load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import read_manifest
from llm_pipeline.models import build_model, check_seq_len
from llm_pipeline.training.objectives import CausalLM, MaskedLMWithNSP, Objective, SpanCorruption

TOKENIZER_KIND = {"gpt": "bpe", "bert": "wordpiece", "t5": "unigram"}  # family -> tokenizer it needs
T5_INPUTS_LENGTH = 128  # encoder input length when not set: T5 has no position table to size it by


class FamilyDataConfig(StageConfig):
    """Data and objective knobs; the defaults are the papers' (BERT: 15% masked; T5: 15% noise, spans of 3)."""

    seq_len: int | None = Field(None, gt=0, description="input length; None: the model's maximum (t5: 128)")
    batch_size: int = Field(16, gt=0, description="sequences per device per micro-batch")
    num_workers: int = Field(0, ge=0)
    samples_per_epoch: int | None = Field(None, gt=0, description="gpt/t5 training windows per epoch")
    tasks_dir: str = "data/ingest/tasks"  # bert: the nsp pairs live in <tasks_dir>/nsp/
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    noise_density: float = Field(0.15, gt=0, lt=1)
    mean_noise_span_length: float = Field(3.0, ge=1)
    val_seed: int = 0  # validation masks/noise are drawn from this seed, the same every evaluation


@dataclass
class PretrainSetup:
    model: nn.Module
    objective: Objective
    train_loader: DataLoader
    val_loader: DataLoader
    seq_len: int  # tokens per input sequence (gpt window, bert pair, t5 encoder input)
    tokenizer_manifest: dict[str, Any]


def build_pretrain_setup(family: str, tokenizer_dir: str | Path, preset: str, overrides: dict[str, Any],
                         data: FamilyDataConfig) -> PretrainSetup:
    """Model, objective and loaders for `family`, from `<tokenizer_dir>/{manifest.json, tokenizer.json, *.bin}`."""
    if family not in TOKENIZER_KIND:
        raise PipelineError(f"unknown model family {family!r}; known families: {', '.join(TOKENIZER_KIND)}")
    tokenizer_dir, overrides = Path(tokenizer_dir), dict(overrides)
    manifest = read_manifest(tokenizer_dir)
    _check_tokenizer_kind(family, tokenizer_dir, manifest)
    _check_vocab_size(family, overrides, manifest["vocab_size"])
    builder = {"gpt": _build_gpt, "bert": _build_bert, "t5": _build_t5}[family]
    return builder(tokenizer_dir, manifest, preset, overrides, data)


def _build_gpt(tokenizer_dir: Path, manifest: dict, preset: str, overrides: dict, data: FamilyDataConfig
               ) -> PretrainSetup:
    model = build_model("gpt", preset, manifest["vocab_size"], **overrides)
    seq_len = _seq_len(model, data)
    train, val = build_lm_dataloaders(tokenizer_dir, manifest["dtype"], seq_len, data.batch_size,
                                      data.num_workers, data.samples_per_epoch)
    return PretrainSetup(model, CausalLM(), train, val, seq_len, manifest)


def _build_bert(tokenizer_dir: Path, manifest: dict, preset: str, overrides: dict, data: FamilyDataConfig
                ) -> PretrainSetup:
    tokenizer = load_tokenizer(tokenizer_dir / "tokenizer.json")
    special = BertSpecialIds.from_tokenizer(tokenizer)
    model = build_model("bert", preset, manifest["vocab_size"], **overrides)
    seq_len = _seq_len(model, data)
    special_ids = {tokenizer.token_to_id(t) for t in manifest.get("special_tokens", {}).values()}
    special_ids |= {special.pad, special.cls, special.sep, special.mask, special.unk}
    masking = MaskingConfig(special.mask, manifest["vocab_size"], tuple(sorted(special_ids - {None})),
                            data.mlm_probability)

    def dataset(split: str, seed: int | None) -> NSPDataset:
        pairs, is_next = load_nsp_pairs(data.tasks_dir, split, tokenizer)
        return NSPDataset(pairs, is_next, special, masking, seq_len, seed)

    collate = functools.partial(collate_nsp, pad_id=special.pad)
    train = _loader(dataset("train", None), data, collate, shuffle=True)
    val = _loader(dataset("val", data.val_seed), data, collate, shuffle=False)
    return PretrainSetup(model, MaskedLMWithNSP(), train, val, seq_len, manifest)


def _build_t5(tokenizer_dir: Path, manifest: dict, preset: str, overrides: dict, data: FamilyDataConfig
              ) -> PretrainSetup:
    tokenizer = load_tokenizer(tokenizer_dir / "tokenizer.json")
    pad_id = tokenizer.token_to_id("<pad>")
    if pad_id is None:
        raise PipelineError(f"{tokenizer_dir / 'tokenizer.json'}: no <pad> token; T5 needs the unigram tokenizer")
    model = build_model("t5", preset, manifest["vocab_size"], **{"pad_id": pad_id, **overrides})
    seq_len = _seq_len(model, data)
    corruption = SpanCorruptionConfig(_sentinel_ids(tokenizer, tokenizer_dir), manifest["eot_id"],
                                      data.noise_density, data.mean_noise_span_length)
    raw_length, _ = compute_raw_length(seq_len, data.noise_density, data.mean_noise_span_length)
    _, spans = compute_span_counts(raw_length, data.noise_density, data.mean_noise_span_length)
    if spans > len(corruption.sentinel_ids):
        raise PipelineError(f"{tokenizer_dir / 'tokenizer.json'}: {len(corruption.sentinel_ids)} sentinel tokens, "
                            f"but inputs of {seq_len} tokens have {spans} noise spans; tokenize with more extra_ids")

    def dataset(split: str, random: bool) -> SpanCorruptionDataset:
        return SpanCorruptionDataset(tokenizer_dir / f"{split}.bin", manifest["dtype"], seq_len, corruption,
                                     random, data.samples_per_epoch, data.val_seed)

    collate = functools.partial(collate_span_corruption, pad_id=pad_id)
    train = _loader(dataset("train", True), data, collate, shuffle=True)
    val = _loader(dataset("val", False), data, collate, shuffle=False)
    return PretrainSetup(model, SpanCorruption(), train, val, seq_len, manifest)


def _seq_len(model: nn.Module, data: FamilyDataConfig) -> int:
    maximum = model.config.max_seq_len
    seq_len = data.seq_len or maximum or T5_INPUTS_LENGTH
    check_seq_len(model.config, seq_len, "data.seq_len")
    return seq_len


def _loader(dataset, data: FamilyDataConfig, collate, shuffle: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=data.batch_size, shuffle=shuffle, drop_last=shuffle, collate_fn=collate,
                      num_workers=data.num_workers, persistent_workers=data.num_workers > 0)


def _sentinel_ids(tokenizer: Tokenizer, tokenizer_dir: Path) -> tuple[int, ...]:
    """Ids of <extra_id_0>, <extra_id_1>, ... as far as the tokenizer has them."""
    ids = []
    for i in itertools.count():
        token_id = tokenizer.token_to_id(f"<extra_id_{i}>")
        if token_id is None:
            break
        ids.append(token_id)
    if not ids:
        raise PipelineError(f"{tokenizer_dir / 'tokenizer.json'}: no sentinel tokens <extra_id_0>, ...; "
                            "T5 span corruption needs them (tokenize with kind unigram and extra_ids > 0)")
    return tuple(ids)


def _check_tokenizer_kind(family: str, tokenizer_dir: Path, manifest: dict) -> None:
    kind = manifest.get("tokenizer_kind")
    if kind is not None and kind != TOKENIZER_KIND[family]:
        raise PipelineError(f"{tokenizer_dir / 'manifest.json'}: tokenizer_kind is {kind!r}, but {family} "
                            f"pretrains with a {TOKENIZER_KIND[family]!r} tokenizer")


def _check_vocab_size(family: str, overrides: dict, vocab_size: int) -> None:
    """Drop a vocab_size override that agrees with the tokenizer; refuse one that does not."""
    if "vocab_size" in overrides and overrides.pop("vocab_size") != vocab_size:
        raise PipelineError(f"{family} model override vocab_size does not match the tokenizer's "
                            f"vocab_size {vocab_size}; leave it out, it is taken from the tokenizer")
