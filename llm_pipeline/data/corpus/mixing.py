"""Source mixing weights, applied to the train split only (val/test stay as they are).

A train document of a source with weight w appears floor(w) times, plus once more when a
hash of its id falls below the fraction part: deterministic, no RNG state. Weight 2.0 doubles
a source, 0.5 keeps a hash-chosen half, 0 drops it from train (keeping its val/test docs).
Copies are spread out: the output is the documents in order, repeated in rounds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from llm_pipeline.data.records import Document, doc_id, unit_interval


def copies(doc: Document, weight: float, seed: str) -> int:
    whole, frac = math.floor(weight), weight - math.floor(weight)
    return whole + (frac > 0 and unit_interval(doc_id(doc.source, doc.text), f"{seed}/weight") < frac)


def apply_weights(train: Sequence[Document], weights: dict[str, float], seed: str) -> list[Document]:
    """The weighted train split; sources missing from `weights` keep weight 1."""
    n = [copies(d, weights.get(d.source, 1.0), seed) for d in train]
    return [d for r in range(max(n, default=0)) for d, k in zip(train, n) if k > r]


def weighted_counts(
    train: Sequence[Document], weighted: Sequence[Document], weights: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per source: its weight, train documents before and after weighting."""
    before, after = Counter(d.source for d in train), Counter(d.source for d in weighted)
    return {
        s: {"weight": weights.get(s, 1.0), "train_documents": before[s], "train_effective": after[s]}
        for s in sorted(before)
    }
