"""Deterministic train/val/test assignment from a stable hash of a key.

The same key always lands in the same split, on every machine and Python version (hashlib,
not the salted built-in `hash`), so adding documents never moves existing ones.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: str) -> float:
    """Map (seed, key) to a float in [0, 1), uniformly."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, val_fraction: float, test_fraction: float, seed: str) -> str:
    """'val' for the first val_fraction of the hash range, then 'test', the rest 'train'."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"split fractions val={val_fraction}, test={test_fraction}: "
                         "each must be >= 0 and together < 1")
    u = unit_interval(key, seed)
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"
