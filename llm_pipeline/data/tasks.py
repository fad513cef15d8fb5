"""Downstream task builders from the Debian descriptions.

Classification: long description -> Section, over the `top_n` most frequent sections.
Examples are split by source package (the group), so sibling binaries of one source
(libfoo1, libfoo-dev, ...) whose descriptions share most of their text never straddle splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from llm_pipeline.data.splits import SPLITS, assign_split, unit_interval


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    group: str


def top_labels(examples: Iterable[Example], top_n: int) -> list[str]:
    """The top_n most frequent labels (ties broken by name, so the choice is stable)."""
    counts = Counter(e.label for e in examples)
    return [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]


def build_classification(examples: list[Example], *, top_n: int, min_chars: int,
                         val_fraction: float, test_fraction: float, seed: str,
                         max_per_split: int | None = None) -> dict[str, list[Example]]:
    """Keep examples of the top_n labels with text >= min_chars; split by group."""
    long_enough = [e for e in examples if len(e.text) >= min_chars]
    labels = set(top_labels(long_enough, top_n))
    splits: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for e in long_enough:
        if e.label in labels:
            splits[assign_split(e.group, val_fraction, test_fraction, seed)].append(e)
    if max_per_split is not None:
        # a hash-ordered sample, not the first N: file order is alphabetical by package
        for name, rows in splits.items():
            rows.sort(key=lambda e: unit_interval(e.text, seed))
            splits[name] = rows[:max_per_split]
    return splits


def label_distribution(examples: list[Example]) -> dict[str, int]:
    return dict(Counter(e.label for e in examples).most_common())
