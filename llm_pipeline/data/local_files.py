"""Users' own files as documents, failing on the first bad record (for task data).

The corpus reads through data/sources.py, which can quarantine bad records instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from llm_pipeline.data.cleaning import Document
from llm_pipeline.data.readers import FileFormat, ReadOptions, accept_records, expand_location, read_file
from llm_pipeline.errors import PipelineError


def expand_paths(pattern: str, fmt: FileFormat = "txt") -> list[Path]:
    """Files at a path, glob or directory (see readers.expand_location); none -> PipelineError."""
    files = expand_location(pattern, fmt)
    if not files:
        raise PipelineError(f"{pattern}: no files match this path")
    return files


def iter_local_documents(files: list[Path], fmt: FileFormat, source: str,
                         text_field: str = "text") -> Iterator[Document]:
    opts = ReadOptions(text_field=text_field)
    for path in files:
        yield from accept_records(read_file(path, fmt, source, opts), source, "fail", None)
