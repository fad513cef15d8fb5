"""Classification: Debian long description -> Section, over the top_n most frequent sections.

Each description keeps the corpus split its text landed in (the corpus splits Debian text by
source package), so sibling binaries of one source (libfoo1, libfoo-dev, ...) whose
descriptions share most of their text never straddle splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.records import unit_interval
from llm_pipeline.data.sources.debian import DebianDescription
from llm_pipeline.data.tasks.base import TaskData, string_schema

SOURCE = "Debian Packages (Section) + Translation-en (long description), joined on Description-md5"


class ClassificationConfig(StageConfig):
    enabled: bool = True  # built only when a Debian source is listed
    top_n_sections: int = Field(8, ge=2)  # labels = the N most frequent Sections
    min_chars: int = Field(40, ge=0)  # shortest description kept as an example
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled cap per split; null = all


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    group: str


def top_labels(examples: Iterable[Example], top_n: int) -> list[str]:
    """The top_n most frequent labels (ties broken by name, so the choice is stable)."""
    counts = Counter(e.label for e in examples)
    return [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]


def build_classification(
    splits: dict[str, list[Example]], *, top_n: int, min_chars: int, seed: str, max_per_split: int | None = None
) -> dict[str, list[Example]]:
    """Keep examples of the top_n labels (counted over all splits) with text >= min_chars."""
    long_enough = {s: [e for e in rows if len(e.text) >= min_chars] for s, rows in splits.items()}
    labels = set(top_labels((e for rows in long_enough.values() for e in rows), top_n))
    out = {s: [e for e in rows if e.label in labels] for s, rows in long_enough.items()}
    if max_per_split is not None:
        # a hash-ordered sample, not the first N: file order is alphabetical by package
        out = {s: sorted(rows, key=lambda e: unit_interval(e.text, seed))[:max_per_split] for s, rows in out.items()}
    return out


def label_distribution(examples: list[Example]) -> dict[str, int]:
    return dict(Counter(e.label for e in examples).most_common())


def build_classification_task(
    cfg: ClassificationConfig, descriptions: dict[str, list[DebianDescription]], seed: str
) -> TaskData:
    examples = {s: [Example(d.long_description, d.section, d.source) for d in rows] for s, rows in descriptions.items()}
    splits = build_classification(
        examples, top_n=cfg.top_n_sections, min_chars=cfg.min_chars, seed=seed, max_per_split=cfg.max_per_split
    )
    rows = {s: [{"text": e.text, "label": e.label, "group": e.group} for e in es] for s, es in splits.items()}
    return TaskData(
        "classification",
        SOURCE,
        string_schema("text", "label", "group"),
        rows,
        group_kind="debian_source",
        input_column="text",
        label_column="label",
    )
