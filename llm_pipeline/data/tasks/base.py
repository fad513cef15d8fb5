"""What every task builder returns, and the helpers they share: split, cap, task card.

A task is a table per split (rows are dicts of its columns) plus what the report needs to
describe it: where it came from, which column is the label, what its group key means.
"""

from __future__ import annotations

import heapq
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from llm_pipeline.data.corpus.splits import SPLITS, assign_split
from llm_pipeline.data.records import unit_interval

Row = dict[str, Any]
T = TypeVar("T")
# What `group` holds. Leakage checks compare the first two against the corpus train split.
GroupKind = Literal["debian_source", "doc_id", "lemma", "record"]


class SplitParams(Protocol):
    """The corpus split settings (ingest's SplitConfig): every task reuses them."""

    val_fraction: float
    test_fraction: float
    seed: str


@dataclass
class TaskData:
    name: str
    source: str  # for the task card: where the examples come from
    schema: pa.Schema  # column names and types, in file order
    splits: dict[str, list[Row]]
    group_kind: GroupKind
    input_column: str  # compared against the corpus train texts
    label_column: str | None = None  # its distribution goes in the card
    notes: dict[str, Any] = field(default_factory=dict)  # task-specific counts for the card

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def string_schema(*names: str) -> pa.Schema:
    return pa.schema([(n, pa.string()) for n in names])


def empty_splits() -> dict[str, list[Row]]:
    return {s: [] for s in SPLITS}


def split_by_hash(rows: Iterable[Row], split: SplitParams, key: str = "group") -> dict[str, list[Row]]:
    """Assign each row by a stable hash of row[key] with the corpus seed (groups stay whole)."""
    out = empty_splits()
    memo: dict[str, str] = {}  # one hash per group, not per row (WordNet: 207k rows)
    for row in rows:
        group = row[key]
        if group not in memo:
            memo[group] = assign_split(group, split.val_fraction, split.test_fraction, split.seed)
        out[memo[group]].append(row)
    return out


class _Largest:
    """A heap entry whose order is reversed, so a heapq heap keeps its largest key on top."""

    __slots__ = ("key", "value")

    def __init__(self, key: Any, value: Any) -> None:
        self.key, self.value = key, value

    def __lt__(self, other: _Largest) -> bool:
        return self.key > other.key


def smallest(keyed: Iterable[tuple[Any, T]], limit: int | None) -> list[T]:
    """The values of the `limit` smallest (distinct) keys, in key order; all of them if limit is
    None. Streams `keyed`, holding at most `limit` entries."""
    if limit is None:
        return [value for _, value in sorted(keyed, key=lambda kv: kv[0])]
    heap: list[_Largest] = []
    for key, value in keyed:
        if len(heap) < limit:
            heapq.heappush(heap, _Largest(key, value))
        elif key < heap[0].key:
            heapq.heapreplace(heap, _Largest(key, value))
    return [entry.value for entry in sorted(heap, key=lambda e: e.key)]


def cap_rows(
    rows: Iterable[Row], max_rows: int | None, seed: str, order_key: Callable[[Row], str] = lambda r: r["group"]
) -> list[Row]:
    """A hash-ordered sample of at most max_rows (whole groups first; never file order,
    which is alphabetical and would keep only "lib*" packages or "a*" lemmas): all rows in
    their order if there are no more, else the max_rows with the smallest (hash, position).
    Streams `rows`, holding at most max_rows of them."""
    if max_rows is None:
        return list(rows)
    seen = 0

    def keyed() -> Iterator[tuple[tuple[float, int], tuple[int, Row]]]:
        nonlocal seen
        for i, row in enumerate(rows):
            seen += 1
            yield (unit_interval(order_key(row), seed), i), (i, row)

    sample = smallest(keyed(), max_rows)
    if seen <= max_rows:  # nothing to cut: every row, in its order
        sample.sort(key=lambda p: p[0])
    return [row for _, row in sample]


def cap_splits(splits: dict[str, list[Row]], max_rows: int | None, seed: str) -> dict[str, list[Row]]:
    return {s: cap_rows(rows, max_rows, seed) for s, rows in splits.items()}


def write_task(task: TaskData, folder: Path) -> None:
    """<folder>/{train,val,test}.parquet with the task's schema (empty splits included)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in task.splits.items():
        table = pa.table(
            {c: pa.array([r[c] for r in rows], task.schema.field(c).type) for c in task.columns}, schema=task.schema
        )
        pq.write_table(table, folder / f"{split}.parquet")


def _length_stats(values: list[str]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0}
    lengths = sorted(len(v) for v in values)
    return {
        "mean": round(statistics.fmean(lengths), 1),
        "median": float(statistics.median(lengths)),
        "p95": float(lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))]),
    }


def task_card(task: TaskData) -> dict[str, Any]:
    """Sizes, groups, label distribution and lengths (chars) per split, for the report."""
    text_columns = [
        c for c in task.columns if task.schema.field(c).type == pa.string() and c not in ("group", task.label_column)
    ]
    card: dict[str, Any] = {
        "source": task.source,
        "columns": task.columns,
        "group": task.group_kind,
        "sizes": {s: len(rows) for s, rows in task.splits.items()},
        "groups": {s: len({r["group"] for r in rows}) for s, rows in task.splits.items()},
        "lengths_chars": {
            c: {s: _length_stats([r[c] for r in rows]) for s, rows in task.splits.items()} for c in text_columns
        },
    }
    if task.label_column:
        card["label_distribution"] = {
            s: {str(k): n for k, n in Counter(r[task.label_column] for r in rows).most_common()}
            for s, rows in task.splits.items()
        }
    return {**card, **task.notes}
