"""Deterministic train/val/test assignment from a stable hash of a key.

The same key always lands in the same split, on every machine and Python version (hashlib,
not the salted built-in `hash`), so adding documents never moves existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_pipeline.data.records import unit_interval

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    val_fraction: float
    test_fraction: float
    seed: str


def assign_split(key: str, val_fraction: float, test_fraction: float, seed: str) -> str:
    """'val' for the first val_fraction of the hash range, then 'test', the rest 'train'."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"split fractions val={val_fraction}, test={test_fraction}: each must be >= 0 and together < 1"
        )
    u = unit_interval(key, seed)
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"
