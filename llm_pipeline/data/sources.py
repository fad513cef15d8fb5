"""Corpus source declarations (params/ingest.yaml `sources:`) and the loaders of users' data.

Every source has a `weight` (train-split mixing, see mixing.py) and an `on_error` policy.
The Debian and Bible loaders live in stages/ingest.py (they fetch); files and `datasets`
datasets are read here, lazily: documents stream into cleaning one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.data import debian
from llm_pipeline.data.cleaning import Document, QuarantineRow
from llm_pipeline.data.readers import (EXTENSIONS, BadRecord, ReadOptions, Record, accept_records,
                                       expand_location, read_file)

OnError = Literal["fail", "quarantine"]


class SourceOptions(StageConfig):
    """Fields every source kind shares."""
    weight: float = Field(1.0, ge=0)             # train-split mixing weight: 2.0 = each train doc twice,
                                                 # 0.5 = a hash-chosen half; val/test never reweighted


class UserSourceOptions(SourceOptions):
    """Fields of the sources that read users' data."""
    name: str | None = None                      # the `source` column; default "<kind>:<path>"
    text_field: str = "text"                     # jsonl key / csv, parquet or dataset column
    on_error: OnError | None = None              # null: the top-level on_error


class FileSourceConfig(UserSourceOptions):
    kind: Literal["txt", "jsonl", "csv", "parquet"]
    path: str                                    # file, glob (`**` recurses) or directory (recursed,
                                                 # files with the kind's extension, maybe .gz/.bz2/.zst)
    unit: Literal["file", "paragraph"] = "file"  # txt: a document per file or per blank-line paragraph
    delimiter: str = Field(",", min_length=1, max_length=1)   # csv

    @model_validator(mode="after")
    def _unit_only_for_txt(self) -> FileSourceConfig:
        if self.unit != "file" and self.kind != "txt":
            raise ValueError(f"unit: {self.unit} applies to kind: txt only")
        return self


class HFDatasetSourceConfig(UserSourceOptions):
    kind: Literal["hf_dataset"]
    path: str                                    # a save_to_disk directory, or a Hub id when online
    split: str | None = None                     # null: every split of a DatasetDict


@dataclass
class SourceData:
    """One source, read lazily: `documents` fills `dropped` as it is consumed."""
    name: str
    documents: Iterable[Document]
    inputs: list[Path]
    dropped: list[QuarantineRow] = field(default_factory=list)
    descriptions: list[debian.DebianDescription] = field(default_factory=list)
    sampled_out: int = 0


def source_name(src: StageConfig) -> str:
    name = getattr(src, "name", None)
    if name:
        return name
    path = getattr(src, "path", None)
    return f"{src.kind}:{path}" if path else {"debian_descriptions": debian.SOURCE_NAME}.get(src.kind, src.kind)


def load_files(src: FileSourceConfig, on_error: OnError, max_record_bytes: int) -> SourceData:
    files = expand_location(src.path, src.kind)
    name = source_name(src)
    opts = ReadOptions(src.text_field, src.unit, src.delimiter, max_record_bytes)

    def records() -> Iterator[Record]:
        if not files:
            yield BadRecord(src.path, "no_files", f"no {src.kind} files here (extensions "
                            f"{'/'.join(EXTENSIONS[src.kind])}, optionally .gz/.bz2/.zst)")
        for path in files:
            yield from read_file(path, src.kind, name, opts)

    data = SourceData(name, [], files)
    data.documents = accept_records(records(), name, src.on_error or on_error, data.dropped)
    return data


def load_hf_dataset(src: HFDatasetSourceConfig, on_error: OnError, max_record_bytes: int) -> SourceData:
    from llm_pipeline.data.hf_datasets import read_hf_dataset   # imports `datasets` (slow): only if used

    name = source_name(src)
    records = read_hf_dataset(src.path, src.text_field, src.split, name, max_record_bytes)
    local = Path(src.path)
    data = SourceData(name, [], [local] if local.exists() else [])
    data.documents = accept_records(records, name, src.on_error or on_error, data.dropped)
    return data

