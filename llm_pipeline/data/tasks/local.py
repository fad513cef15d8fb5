"""A user's own task data: JSONL or parquet files with named input and target fields.

Declared under `tasks.local` in params/ingest.yaml; read through the same entry point as
local corpus sources, sources/local_files.read_local_files (errors name file and line/row);
split by a stable hash of the group field (default: the input text, so duplicate inputs
never straddle splits) with the corpus seed, or, with `split_field`, by each record's own
train/val/test value (a user's fixed test set is kept as it is).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.sources.local_files import expand_paths, read_local_files
from llm_pipeline.data.sources.readers import Document, ReadOptions
from llm_pipeline.data.tasks.base import (
    Row,
    SplitParams,
    TaskData,
    cap_splits,
    empty_splits,
    split_by_hash,
    string_schema,
)
from llm_pipeline.errors import PipelineError

# classification tasks use the built-in classification columns, so finetune reads both alike
COLUMNS = {"seq2seq": ("input", "target"), "classification": ("text", "label")}
# a split_field's values (case-insensitive, stripped) -> our split names
SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}


class LocalTaskConfig(StageConfig):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")  # the folder under tasks/
    kind: Literal["seq2seq", "classification"]
    path: str  # file or glob (`**` recurses)
    format: Literal["jsonl", "parquet"]
    input_field: str = "input"
    target_field: str = "target"  # the label, for kind: classification
    group_field: str | None = None  # rows sharing it stay in one split
    split_field: str | None = None  # each record's train/val/test (validation, dev: val); no hash split
    max_per_split: int | None = Field(None, ge=1)


def read_local_rows(cfg: LocalTaskConfig, files: list[Path]) -> tuple[list[Row], int]:
    """Rows with the task's columns (and "split", with a split_field), and how many were
    skipped for an empty input/target."""
    fields = [cfg.input_field, cfg.target_field] + ([cfg.group_field] if cfg.group_field else [])
    # one pass per field with the corpus readers; they yield records in the same order
    streams = [read_local_files(files, cfg.format, f"task:{cfg.name}", ReadOptions(text_field=f)) for f in fields]
    if cfg.split_field:  # last, so a record-level error (bad JSON, ...) is reported by the input's pass
        fields.append(cfg.split_field)
        streams.append(_read_split_field(cfg, cfg.split_field, files))
    in_col, out_col = COLUMNS[cfg.kind]
    rows, skipped = [], 0
    for docs in zip(*streams, strict=True):
        if len({d.location for d in docs}) != 1:
            raise PipelineError(f"{docs[0].location}: fields {fields} not read from one record")
        split = split_value(docs[-1], cfg.split_field) if cfg.split_field else None
        values = [d.text.strip() for d in docs]
        if not values[0] or not values[1]:
            skipped += 1
            continue
        row = {in_col: values[0], out_col: values[1], "group": values[2] if cfg.group_field else values[0]}
        if split:
            row["split"] = split  # consumed by split_by_field
        rows.append(row)
    return rows, skipped


def _read_split_field(cfg: LocalTaskConfig, field: str, files: list[Path]) -> Iterator[Document]:
    """The split_field's pass; a reader error (a record without the field) says it is the split_field."""
    try:
        yield from read_local_files(files, cfg.format, f"task:{cfg.name}", ReadOptions(text_field=field))
    except PipelineError as exc:
        raise PipelineError(
            f"{exc}; tasks.local {cfg.name!r} reads each record's split from split_field {field!r}"
        ) from None


def split_value(doc: Document, field: str) -> str:
    """A record's split from its split_field value: train, val (validation, dev) or test."""
    split = SPLIT_VALUES.get(doc.text.strip().lower())
    if split is None:
        raise PipelineError(
            f"{doc.location}: split_field {field!r} is {doc.text!r}; expected train, val (or validation, dev) or test"
        )
    return split


def split_by_field(rows: list[Row]) -> dict[str, list[Row]]:
    """The rows in the splits their split_field named (each row's "split" key is consumed)."""
    out = empty_splits()
    for row in rows:
        out[row.pop("split")].append(row)
    return out


def local_task_files(cfg: LocalTaskConfig) -> list[Path]:
    """The files a local task reads (the fetch stage hashes the same list)."""
    return expand_paths(cfg.path, cfg.format)


def build_local_task(cfg: LocalTaskConfig, split: SplitParams) -> tuple[TaskData, list[Path]]:
    files = local_task_files(cfg)
    rows, skipped = read_local_rows(cfg, files)
    if not rows:
        raise PipelineError(
            f"tasks.local {cfg.name!r}: no rows with a non-empty {cfg.input_field!r} "
            f"and {cfg.target_field!r} in {cfg.path}"
        )
    in_col, out_col = COLUMNS[cfg.kind]
    task = TaskData(
        cfg.name,
        f"local {cfg.format}: {cfg.path}",
        string_schema(in_col, out_col, "group"),
        cap_splits(
            split_by_field(rows) if cfg.split_field else split_by_hash(rows, split), cfg.max_per_split, split.seed
        ),
        group_kind="record",
        input_column=in_col,
        label_column=out_col if cfg.kind == "classification" else None,
        notes={"skipped_empty": skipped} | ({"split_from": cfg.split_field} if cfg.split_field else {}),
    )
    return task, files
