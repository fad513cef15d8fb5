"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import functools
import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Rises linearly to 1.0 at `warmup_steps` (never 0, so the first step already learns),
    follows a half cosine down to `min_lr_ratio` at `max_steps`, and stays there after.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= max_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_lr_ratio: float
) -> LambdaLR:
    multiplier = functools.partial(
        warmup_cosine, warmup_steps=warmup_steps, max_steps=max_steps, min_lr_ratio=min_lr_ratio
    )
    return LambdaLR(optimizer, multiplier)
