"""Every corpus source kind (params/ingest.yaml `sources:`), its config and its loader.

The registry: a kind is declared here once, as a config class in `SourceConfig` and a loader
in `LOADERS`; `load_source` reads any of them. Built in: debian_descriptions and bible_web
(fetched from the Debian archive), users' files (txt/jsonl/csv/parquet, read through
local_files.read_local_files) and Hugging Face `datasets` datasets. Every source has a
`weight` (train-split mixing, see corpus/mixing.py) and users' sources an `on_error` policy.
File and dataset documents stream into cleaning one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from tqdm.auto import tqdm

from llm_pipeline.config import StageConfig
from llm_pipeline.data.records import Document, QuarantineRow, unit_interval
from llm_pipeline.data.sources import apt_sources, bible, debian
from llm_pipeline.data.sources.local_files import read_local_files
from llm_pipeline.data.sources.readers import ReadOptions, accept_records, expand_location
from llm_pipeline.data.sources.snapshot import SourceFiles

OnError = Literal["fail", "quarantine"]


class SourceOptions(StageConfig):
    """Fields every source kind shares."""

    weight: float = Field(1.0, ge=0)  # train-split mixing weight: 2.0 = each train doc twice,
    # 0.5 = a hash-chosen half; val/test never reweighted


class DebianSourceConfig(SourceOptions):
    kind: Literal["debian_descriptions"]
    max_records: int | None = Field(None, ge=1)  # hash-sampled descriptions; null = all (~61k)


class BibleSourceConfig(SourceOptions):
    kind: Literal["bible_web"]
    max_records: int | None = Field(None, ge=1)  # first N chapters in book order; null = all


class UserSourceOptions(SourceOptions):
    """Fields of the sources that read users' data."""

    name: str | None = None  # the `source` column; default "<kind>:<path>"
    text_field: str = "text"  # jsonl key / csv, parquet or dataset column
    on_error: OnError | None = None  # null: the top-level on_error


class FileSourceConfig(UserSourceOptions):
    kind: Literal["txt", "jsonl", "csv", "parquet"]
    path: str  # file, glob (`**` recurses) or directory (recursed,
    # files with the kind's extension, maybe .gz/.bz2/.zst)
    unit: Literal["file", "paragraph"] = "file"  # txt: a document per file or per blank-line paragraph
    delimiter: str = Field(",", min_length=1, max_length=1)  # csv

    @model_validator(mode="after")
    def _unit_only_for_txt(self) -> FileSourceConfig:
        if self.unit != "file" and self.kind != "txt":
            raise ValueError(f"unit: {self.unit} applies to kind: txt only")
        return self


class HFDatasetSourceConfig(UserSourceOptions):
    kind: Literal["hf_dataset"]
    path: str  # a save_to_disk directory, or a Hub id when online
    split: str | None = None  # null: every split of a DatasetDict


SourceConfig = Annotated[
    DebianSourceConfig | BibleSourceConfig | FileSourceConfig | HFDatasetSourceConfig, Field(discriminator="kind")
]


@dataclass(frozen=True)
class LoadContext:
    """What loaders need from the ingest config besides their own source's fields."""

    files: SourceFiles  # where the upstream (Debian archive) files come from: snapshot or apt cache
    cache_dir: str  # scratch: .debs are unpacked here
    progress: bool  # tqdm bars
    on_error: OnError  # the top-level policy for bad records
    max_record_bytes: int  # bigger raw records are quarantined (too_long)
    seed: str  # the split seed (hash-sampling max_records)


@dataclass
class SourceData:
    """One source, read lazily: `documents` fills `dropped` as it is consumed."""

    name: str
    documents: Iterable[Document]
    inputs: list[Path]
    dropped: list[QuarantineRow] = field(default_factory=list)
    descriptions: list[debian.DebianDescription] = field(default_factory=list)
    sampled_out: int = 0


def source_name(src: SourceConfig) -> str:
    name = getattr(src, "name", None)
    if name:
        return name
    path = getattr(src, "path", None)
    return f"{src.kind}:{path}" if path else {"debian_descriptions": debian.SOURCE_NAME}.get(src.kind, src.kind)


def _index_streams(paths: list[Path]) -> Iterator:
    for path in paths:
        with apt_sources.open_index(path) as stream:
            yield stream


def load_debian(src: DebianSourceConfig, ctx: LoadContext) -> SourceData:
    files = ctx.files.index_files()
    records, dropped = debian.read_descriptions(_index_streams(files.packages), _index_streams(files.translations))
    kept = records
    if src.max_records is not None and len(records) > src.max_records:
        # a hash-ordered sample: the files are alphabetical, so the first N would be all "lib*"
        chosen = set(
            sorted(range(len(records)), key=lambda i: unit_interval(records[i].md5, ctx.seed))[: src.max_records]
        )
        kept = [r for i, r in enumerate(records) if i in chosen]
    docs = [Document(debian.SOURCE_NAME, r.package, r.long_description) for r in kept]
    return SourceData(
        debian.SOURCE_NAME,
        docs,
        [*files.packages, *files.translations],
        dropped,
        kept,
        sampled_out=len(records) - len(kept),
    )


def load_bible(src: BibleSourceConfig, ctx: LoadContext) -> SourceData:
    deb = ctx.files.deb(bible.DEB_PACKAGE)
    root = apt_sources.extract_deb(deb, Path(ctx.cache_dir) / bible.DEB_PACKAGE)
    chapters = tqdm(
        bible.iter_chapters(root / "usr/share/sword"), desc="read bible", unit="chapter", disable=not ctx.progress
    )
    docs = [d for _, d in zip(range(src.max_records or 10**9), chapters)]
    return SourceData(bible.SOURCE_NAME, docs, [deb])


def load_files(src: FileSourceConfig, on_error: OnError, max_record_bytes: int) -> SourceData:
    files = expand_location(src.path, src.kind)
    name = source_name(src)
    opts = ReadOptions(src.text_field, src.unit, src.delimiter, max_record_bytes)
    data = SourceData(name, [], files)
    data.documents = read_local_files(
        files, src.kind, name, opts, src.on_error or on_error, data.dropped, pattern=src.path
    )
    return data


def load_hf_dataset(src: HFDatasetSourceConfig, on_error: OnError, max_record_bytes: int) -> SourceData:
    from llm_pipeline.data.sources.hf_datasets import read_hf_dataset  # imports `datasets` (slow): only if used

    name = source_name(src)
    records = read_hf_dataset(src.path, src.text_field, src.split, name, max_record_bytes)
    local = Path(src.path)
    data = SourceData(name, [], [local] if local.exists() else [])
    data.documents = accept_records(records, name, src.on_error or on_error, data.dropped)
    return data


LOADERS: dict[type, Callable[[Any, LoadContext], SourceData]] = {
    DebianSourceConfig: load_debian,
    BibleSourceConfig: load_bible,
    FileSourceConfig: lambda src, ctx: load_files(src, ctx.on_error, ctx.max_record_bytes),
    HFDatasetSourceConfig: lambda src, ctx: load_hf_dataset(src, ctx.on_error, ctx.max_record_bytes),
}


def upstream_needs(src: SourceConfig) -> tuple[bool, list[str]]:
    """What a source reads from the Debian archive: (the apt index files?, .deb packages)."""
    if isinstance(src, DebianSourceConfig):
        return True, []
    if isinstance(src, BibleSourceConfig):
        return False, [bible.DEB_PACKAGE]
    return False, []


def local_files(src: SourceConfig) -> list[Path]:
    """The users' files a source reads, as its loader finds them (hashed by the fetch stage)."""
    if isinstance(src, FileSourceConfig):
        return expand_location(src.path, src.kind)
    if isinstance(src, HFDatasetSourceConfig) and Path(src.path).exists():
        root = Path(src.path)
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return []  # a Hub dataset id: not a local file (the Hub pins revisions itself)


def load_source(src: SourceConfig, ctx: LoadContext) -> SourceData:
    """The source's documents (lazily for files and datasets) and what was read to get them."""
    return LOADERS[type(src)](src, ctx)
