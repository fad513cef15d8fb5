"""Learning-rate schedules as multipliers of the peak rate, per optimizer step.

warmup_cosine: linear warmup, then a half cosine down to a floor.
warmup_stable_decay (WSD): linear warmup, a long plateau at the peak, then a short linear
decay to the floor at the end (Hägele et al. 2024); a run can be extended from a plateau
checkpoint without restarting the schedule.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

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


def warmup_stable_decay(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float, decay_steps: int) -> float:
    """Multiplier at `step`: warmup as in warmup_cosine, 1.0 until `max_steps - decay_steps`,
    then a straight line down to `min_lr_ratio` at `max_steps`, and the floor after."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_start = max(warmup_steps, max_steps - decay_steps)
    if step < decay_start:
        return 1.0
    if step >= max_steps:
        return min_lr_ratio
    progress = (step - decay_start) / max(1, max_steps - decay_start)  # 0 -> 1
    return 1.0 - (1.0 - min_lr_ratio) * progress


SCHEDULES: dict[str, Callable[..., float]] = {"cosine": warmup_cosine, "wsd": warmup_stable_decay}


def build_schedule(optimizer: torch.optim.Optimizer, name: str, **kwargs: float) -> LambdaLR:
    """A per-step LambdaLR following SCHEDULES[name] with its keyword arguments."""
    return LambdaLR(optimizer, functools.partial(SCHEDULES[name], **kwargs))
