"""BERT masked-LM corruption: pick 15% of tokens to predict, then 80% [MASK] / 10% random / 10% kept.

Pure functions on id tensors. Positions that are special tokens or padding are never picked;
labels hold the original id at picked positions and IGNORE_INDEX everywhere else, so the loss
only counts the picked tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from llm_pipeline.models.blocks import IGNORE_INDEX  # the label id every family's loss skips


@dataclass(frozen=True)
class MaskingConfig:
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]  # [PAD] [CLS] [SEP] [MASK] [UNK] ...: never picked, never drawn as random
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8  # of the picked tokens: replaced by [MASK]
    random_fraction: float = 0.1  # of the picked tokens: replaced by a random ordinary token; the rest stay


def compute_mlm_masking(
    input_ids: torch.Tensor, cfg: MaskingConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (..., T) -> (corrupted ids, labels), same shape; input_ids is left unchanged.

    Each ordinary token is picked independently with probability `mlm_probability` (the
    dynamic masking of RoBERTa / HF's collator), so the fraction is 15% on average.
    """
    rand = lambda: torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    maskable = ~_is_any_of(input_ids, cfg.special_ids)
    picked = maskable & (rand() < cfg.mlm_probability)
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))

    # one draw decides the fate of each picked token: [0, 0.8) mask, [0.8, 0.9) random, rest kept
    fate = rand()
    to_mask = picked & (fate < cfg.mask_fraction)
    to_random = picked & (fate >= cfg.mask_fraction) & (fate < cfg.mask_fraction + cfg.random_fraction)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, cfg.mask_id), input_ids)
    random_ids = _random_ordinary_ids(input_ids.shape, cfg, generator).to(input_ids.device)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, labels


def _is_any_of(ids: torch.Tensor, values: Iterable[int]) -> torch.Tensor:
    return torch.isin(ids, torch.tensor(list(values), dtype=ids.dtype, device=ids.device))


def _random_ordinary_ids(shape: torch.Size, cfg: MaskingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform over the vocabulary minus the special ids (a random [PAD] or [CLS] teaches nothing)."""
    ordinary = torch.ones(cfg.vocab_size, dtype=torch.bool)
    ordinary[list(cfg.special_ids)] = False
    choices = ordinary.nonzero().squeeze(1)  # (V_ordinary,)
    return choices[torch.randint(len(choices), shape, generator=generator)]
