"""How much of each task's val/test data the pretraining train split already contains.

An example overlaps when
- its input column equals a train document or one of its paragraphs (exact, after the
  corpus normalization): boilerplate like "This package contains the documentation." is
  shared by many packages, so a test paragraph can be train text of another package;
- or its group is also in train: a Debian source package with a train description, or a
  train document id (nsp, generation: an exact duplicate document in two splits).
Lemma/record groups have no counterpart in the corpus and are not compared.
With the "drop" policy such examples are removed from val/test (counted); "report" keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from llm_pipeline.data.records import Document, doc_id
from llm_pipeline.data.tasks.base import Row, TaskData

HELD_OUT = ("val", "test")
OverlapPolicy = Literal["drop", "report"]


@dataclass
class TrainIndex:
    texts: set[str]  # train documents and their paragraphs
    groups: dict[str, set[str]]  # group kind -> train groups of that kind


def held_out_queries(tasks: Iterable[TaskData]) -> TrainIndex:
    """What the tasks' val/test examples would look up: their inputs, and their groups by kind."""
    texts: set[str] = set()
    groups: dict[str, set[str]] = {}
    for task in tasks:
        for split in HELD_OUT:
            for row in task.splits[split]:
                texts.add(row[task.input_column])
                groups.setdefault(task.group_kind, set()).add(row["group"])
    return TrainIndex(texts, groups)


def build_train_index(
    train: Iterable[Document], package_source: dict[str, str], debian_source: str, wanted: TrainIndex | None = None
) -> TrainIndex:
    """The train split's texts (documents and paragraphs) and groups, read in one pass. With
    `wanted` (held_out_queries), only those that some val/test example looks up are kept, so
    the index grows with the tasks' held-out examples, not with the corpus."""

    def looked_up(kind: str, value: str) -> bool:
        return wanted is None or value in wanted.groups.get(kind, ())

    texts: set[str] = set()
    groups: dict[str, set[str]] = {"debian_source": set(), "doc_id": set()}
    if wanted is not None and not wanted.texts and not any(wanted.groups.values()):
        return TrainIndex(texts, groups)  # nothing is looked up: no pass over train
    for d in train:
        texts.update(t for t in (d.text, *d.text.split("\n\n")) if wanted is None or t in wanted.texts)
        package = package_source.get(d.location) if d.source == debian_source else None
        if package is not None and looked_up("debian_source", package):
            groups["debian_source"].add(package)
        identity = doc_id(d.source, d.text)
        if looked_up("doc_id", identity):
            groups["doc_id"].add(identity)
    return TrainIndex(texts, groups)


def _overlap(task: TaskData, index: TrainIndex, row: Row) -> dict[str, bool]:
    found = {"text": row[task.input_column] in index.texts}
    groups = index.groups.get(task.group_kind)
    if groups is not None:
        found["group"] = row["group"] in groups
    return found


def count_overlap(task: TaskData, index: TrainIndex) -> dict[str, dict[str, int]]:
    """Per held-out split: how many examples overlap train by text, and by group."""
    kinds = ["text"] + (["group"] if task.group_kind in index.groups else [])
    out: dict[str, dict[str, int]] = {}
    for split in HELD_OUT:
        counts = dict.fromkeys(kinds, 0)
        for row in task.splits[split]:
            for kind, hit in _overlap(task, index, row).items():
                counts[kind] += hit
        out[split] = counts
    return out


def drop_overlap(task: TaskData, index: TrainIndex) -> dict[str, int]:
    """Remove overlapping val/test examples in place; returns how many per split."""
    removed = {}
    for split in HELD_OUT:
        rows = task.splits[split]
        task.splits[split] = [r for r in rows if not any(_overlap(task, index, r).values())]
        removed[split] = len(rows) - len(task.splits[split])
    return removed
