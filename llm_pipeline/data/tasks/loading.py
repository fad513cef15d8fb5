"""Read a downstream task's split written by ingest (tasks/<task>/<split>.parquet).

Turning a split into model inputs is the loaders' job (e.g. loaders/classification.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llm_pipeline.errors import PipelineError


def load_task_split(
    tasks_dir: str | Path, task: str, split: str, columns: tuple[str, ...], nullable: tuple[str, ...] = ()
) -> pd.DataFrame:
    """The split's rows; every one of `columns` must be present and, unless in `nullable`, have no nulls."""
    path = Path(tasks_dir) / task / f"{split}.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: task split not found (is the {task!r} task enabled in params/ingest.yaml?)")
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise PipelineError(f"{path}: no examples")
    check_no_nulls(frame, [c for c in columns if c not in nullable], str(path))
    return frame


def check_no_nulls(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """Raise naming the column and first row (0-based position) of the earliest null cell."""
    first: tuple[int, str] | None = None
    for column in columns:
        nulls = frame[column].isna().to_numpy().nonzero()[0]
        if len(nulls) and (first is None or nulls[0] < first[0]):
            first = (int(nulls[0]), column)
    if first is not None:
        row, column = first
        count = int(frame[columns].isna().to_numpy().sum())
        raise PipelineError(
            f"{where}: column {column!r} is null at row {row} ({count} null cell(s) in "
            f"{', '.join(map(repr, columns))}); fix or drop those rows"
        )


# A task's kind follows from its columns (built-in and local tasks alike), so a user's task
# needs no declaration beyond ingest's: what each kind's rows hold.
TASK_KINDS: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "seq2seq": ("input", "target"),
    "generation": ("prompt", "continuation"),
}


def task_kind(tasks_dir: str | Path, task: str) -> str:
    """classification | seq2seq | generation, from the columns of the task's test split."""
    path = Path(tasks_dir) / task / "test.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: task split not found (is the {task!r} task enabled in params/ingest.yaml?)")
    import pyarrow.parquet as pq

    columns = set(pq.read_schema(path).names)
    for kind, needed in TASK_KINDS.items():
        if set(needed) <= columns:
            return kind
    kinds = "; ".join(f"{k}: {', '.join(c)}" for k, c in TASK_KINDS.items())
    raise PipelineError(f"{path}: columns {sorted(columns)} match no task kind ({kinds})")
