"""Users' own text: plain text (one document per file), JSONL and parquet (one per row)."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from llm_pipeline.data.cleaning import Document
from llm_pipeline.errors import PipelineError

LocalFormat = Literal["txt", "jsonl", "parquet"]


def expand_paths(pattern: str) -> list[Path]:
    """Files matching a path or glob (`**` recurses), sorted; none -> PipelineError."""
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise PipelineError(f"{pattern}: no files match this path")
    return files


def read_txt(path: Path, source: str) -> Iterator[Document]:
    yield Document(source, str(path), path.read_text(encoding="utf-8", errors="replace"))


def read_jsonl(path: Path, source: str, text_field: str) -> Iterator[Document]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PipelineError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise PipelineError(f"{path}:{lineno}: expected an object with a string "
                                    f"{text_field!r} field")
            yield Document(source, f"{path}:{lineno}", row[text_field])


def read_parquet(path: Path, source: str, text_field: str) -> Iterator[Document]:
    parquet = pq.ParquetFile(path)
    if text_field not in parquet.schema_arrow.names:
        raise PipelineError(f"{path}: no column {text_field!r} "
                            f"(columns: {', '.join(parquet.schema_arrow.names)})")
    row = 0
    for batch in parquet.iter_batches(columns=[text_field]):
        for text in batch.column(text_field).to_pylist():
            row += 1
            # a null cell becomes "", which cleaning quarantines as too short
            yield Document(source, f"{path}:row{row}", "" if text is None else str(text))


def iter_local_documents(files: list[Path], fmt: LocalFormat, source: str,
                         text_field: str = "text") -> Iterator[Document]:
    for path in files:
        if fmt == "txt":
            yield from read_txt(path, source)
        elif fmt == "jsonl":
            yield from read_jsonl(path, source, text_field)
        else:
            yield from read_parquet(path, source, text_field)
