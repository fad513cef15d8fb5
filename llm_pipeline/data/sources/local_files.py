"""Users' own files as documents: the one entry point that reads them.

`read_local_files` reads txt/JSONL/CSV/parquet files, plain or .gz/.bz2/.zst, record by
record (readers.py) and applies the `on_error` policy. The corpus file sources
(kinds.load_files) use it with on_error fail/quarantine; task data (tasks/local.py) uses
it with the default, which fails on the first bad record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from llm_pipeline.data.records import Document, QuarantineRow
from llm_pipeline.data.sources.readers import (
    EXTENSIONS,
    BadRecord,
    FileFormat,
    ReadOptions,
    Record,
    accept_records,
    expand_location,
    read_file,
)
from llm_pipeline.errors import PipelineError


def expand_paths(pattern: str, fmt: FileFormat = "txt") -> list[Path]:
    """Files at a path, glob or directory (see readers.expand_location); none -> PipelineError."""
    files = expand_location(pattern, fmt)
    if not files:
        raise PipelineError(f"{pattern}: no files match this path")
    return files


def read_local_files(
    files: list[Path],
    fmt: FileFormat,
    source: str,
    opts: ReadOptions = ReadOptions(),
    on_error: Literal["fail", "quarantine"] = "fail",
    dropped: list[QuarantineRow] | None = None,
    *,
    pattern: str | None = None,
) -> Iterator[Document]:
    """Documents of `files` (from expand_location/expand_paths), lazily, in file order.

    A bad record raises a PipelineError naming file and line/row (on_error: fail), or goes
    to `dropped` (quarantine); with dropped=None every bad record raises. No files at all
    is itself a bad record ("no_files", located at `pattern`).
    """

    def records() -> Iterator[Record]:
        if not files:
            yield BadRecord(
                pattern or "",
                "no_files",
                f"no {fmt} files here (extensions {'/'.join(EXTENSIONS[fmt])}, optionally .gz/.bz2/.zst)",
            )
        for path in files:
            yield from read_file(path, fmt, source, opts)

    return accept_records(records(), source, on_error, dropped)
