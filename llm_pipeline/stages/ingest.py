"""ingest: fetch/read every source, clean, dedup, split; write the corpus and task tables.

Outputs (under output_dir):
  corpus/{train,val,test}.parquet               doc_id, source, text
  tasks/classification/{train,val,test}.parquet text, label, group   (needs a Debian source)
  quarantine.parquet                            source, location, reason, text (every drop)
  manifest.json                                 inputs with sha256, counts, label distributions
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from llm_pipeline.config import StageConfig
from llm_pipeline.data import apt_sources, bible, debian
from llm_pipeline.data.cleaning import Document, QuarantineRow, clean_documents, doc_id
from llm_pipeline.data.local_files import expand_paths, iter_local_documents
from llm_pipeline.data.splits import SPLITS, assign_split, unit_interval
from llm_pipeline.data.tasks import Example, build_classification, label_distribution
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import MANIFEST_NAME, atomic_path, build_manifest, describe_inputs, write_json
from llm_pipeline.stages.base import StageResult

log = logging.getLogger(__name__)


class DebianSourceConfig(StageConfig):
    kind: Literal["debian_descriptions"]
    max_records: int | None = Field(None, ge=1)  # hash-sampled descriptions; null = all (~61k)


class BibleSourceConfig(StageConfig):
    kind: Literal["bible_web"]
    max_records: int | None = Field(None, ge=1)  # first N chapters in book order; null = all


class LocalSourceConfig(StageConfig):
    kind: Literal["local"]
    path: str                                    # file or glob (`**` recurses)
    format: Literal["txt", "jsonl", "parquet"]   # txt: one document per file
    text_field: str = "text"                     # jsonl key / parquet column holding the text


SourceConfig = Annotated[Union[DebianSourceConfig, BibleSourceConfig, LocalSourceConfig],
                         Field(discriminator="kind")]


class CleaningConfig(StageConfig):
    min_chars: int = Field(40, ge=0)             # shorter normalized texts are quarantined
    max_chars: int = Field(20000, ge=1)          # longer ones too (likely dumps, not prose)


class SplitConfig(StageConfig):
    val_fraction: float = Field(0.02, ge=0, lt=1)
    test_fraction: float = Field(0.02, ge=0, lt=1)
    seed: str = "llm-pipeline"                   # changing it reshuffles every split

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


class ClassificationConfig(StageConfig):
    enabled: bool = True                         # built only when a Debian source is listed
    top_n_sections: int = Field(8, ge=2)         # labels = the N most frequent Sections
    min_chars: int = Field(40, ge=0)             # shortest description kept as an example
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled cap per split; null = all


def _default_sources() -> list[Any]:
    return [DebianSourceConfig(kind="debian_descriptions"), BibleSourceConfig(kind="bible_web")]


class IngestConfig(StageConfig):
    output_dir: str = "data/ingest"
    cache_dir: str = ".cache/sources"            # downloaded apt lists and .debs (not outputs)
    refresh: bool = False                        # refetch sources even when cached
    progress: bool = True                        # tqdm bars
    sources: list[SourceConfig] = Field(default_factory=_default_sources, min_length=1)
    cleaning: CleaningConfig = CleaningConfig()
    split: SplitConfig = SplitConfig()
    classification: ClassificationConfig = ClassificationConfig()


@dataclass
class SourceData:
    name: str
    documents: list[Document]
    inputs: list[Path]
    dropped: list[QuarantineRow] = field(default_factory=list)
    descriptions: list[debian.DebianDescription] = field(default_factory=list)
    sampled_out: int = 0


def _index_streams(paths: list[Path]) -> Iterator:
    for path in paths:
        with apt_sources.open_index(path) as stream:
            yield stream


def load_debian(src: DebianSourceConfig, cfg: IngestConfig) -> SourceData:
    files = apt_sources.fetch_index_files(cfg.cache_dir, refresh=cfg.refresh)
    records, dropped = debian.read_descriptions(_index_streams(files.packages),
                                                _index_streams(files.translations))
    kept = records
    if src.max_records is not None and len(records) > src.max_records:
        # a hash-ordered sample: the files are alphabetical, so the first N would be all "lib*"
        chosen = set(sorted(range(len(records)),
                            key=lambda i: unit_interval(records[i].md5, cfg.split.seed))[:src.max_records])
        kept = [r for i, r in enumerate(records) if i in chosen]
    docs = [Document(debian.SOURCE_NAME, r.package, r.long_description) for r in kept]
    return SourceData(debian.SOURCE_NAME, docs, [*files.packages, *files.translations], dropped,
                      kept, sampled_out=len(records) - len(kept))


def load_bible(src: BibleSourceConfig, cfg: IngestConfig) -> SourceData:
    deb = apt_sources.fetch_deb(bible.DEB_PACKAGE, cfg.cache_dir, refresh=cfg.refresh)
    root = apt_sources.extract_deb(deb, Path(cfg.cache_dir) / bible.DEB_PACKAGE, refresh=cfg.refresh)
    chapters = tqdm(bible.iter_chapters(root / "usr/share/sword"), desc="read bible",
                    unit="chapter", disable=not cfg.progress)
    docs = [d for _, d in zip(range(src.max_records or 10**9), chapters)]
    return SourceData(bible.SOURCE_NAME, docs, [deb])


def load_local(src: LocalSourceConfig, cfg: IngestConfig) -> SourceData:
    files = expand_paths(src.path)
    name = f"local:{src.path}"
    return SourceData(name, list(iter_local_documents(files, src.format, name, src.text_field)), files)


_LOADERS = {"debian_descriptions": load_debian, "bible_web": load_bible, "local": load_local}


def _split_key(doc: Document, groups: dict[str, str]) -> str:
    # Debian descriptions split by source package, with the classification task's key and
    # seed: a description whose package is a classification val/test example sits in the
    # corpus val/test split, so pretraining never sees fine-tuning eval text (nor the
    # near-identical sibling descriptions of its source package).
    if doc.source == debian.SOURCE_NAME:
        return groups[doc.location]
    return doc_id(doc.source, doc.text)


def _write_table(path: Path, columns: dict[str, list[str]]) -> None:
    pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path)


def _columns(rows: Iterable[Any], names: list[str]) -> dict[str, list[str]]:
    rows = list(rows)
    return {n: [getattr(r, n) for r in rows] for n in names}


def run(cfg: IngestConfig, tracker: Any = None) -> StageResult:
    loaded: list[SourceData] = []
    for src in cfg.sources:
        log.info("reading source %s", src.kind)
        loaded.append(_LOADERS[src.kind](src, cfg))

    seen: set[str] = set()          # sha1 of kept texts: exact dedup across all sources
    kept: list[Document] = []
    quarantine: list[QuarantineRow] = []
    per_source: dict[str, dict[str, Any]] = {}
    for data in loaded:
        docs = tqdm(data.documents, desc=f"clean {data.name}", unit="doc", disable=not cfg.progress)
        ok, dropped = clean_documents(docs, cfg.cleaning.min_chars, cfg.cleaning.max_chars, seen)
        kept += ok
        quarantine += data.dropped + dropped
        per_source[data.name] = {"read": len(data.documents) + len(data.dropped), "kept": len(ok),
                                 "sampled_out": data.sampled_out,
                                 "dropped": dict(Counter(q.reason for q in data.dropped + dropped))}
    if not kept:
        raise PipelineError(f"no documents left after cleaning (min_chars={cfg.cleaning.min_chars}, "
                            f"max_chars={cfg.cleaning.max_chars}); per source: {per_source}")

    descriptions = [d for data in loaded for d in data.descriptions]
    groups = {d.package: d.source for d in descriptions}
    sp = cfg.split
    corpus: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for doc in kept:
        corpus[assign_split(_split_key(doc, groups), sp.val_fraction, sp.test_fraction, sp.seed)].append(doc)

    tasks = None
    if cfg.classification.enabled and descriptions:
        tasks = _classification(kept, descriptions, cfg)

    out = Path(cfg.output_dir)
    counts = _counts(per_source, corpus, quarantine, tasks)
    with atomic_path(out) as tmp:
        _write_outputs(tmp, corpus, quarantine, tasks)
        manifest = build_manifest(
            "ingest",
            inputs=describe_inputs([p for data in loaded for p in data.inputs]),
            outputs={"corpus": {s: f"corpus/{s}.parquet" for s in SPLITS},
                     "classification": tasks and {s: f"tasks/classification/{s}.parquet" for s in SPLITS},
                     "quarantine": "quarantine.parquet"},
            counts=counts,
            extra={"split_keys": {"debian": "source package (same as classification)",
                                  "other": "doc_id"},
                   "mlflow_run_id": getattr(tracker, "run_id", None)},
        )
        write_json(tmp / MANIFEST_NAME, manifest)
    return StageResult(metrics=_metrics(corpus, tasks),
                       report={"output_dir": str(out), "manifest": str(out / MANIFEST_NAME),
                               "counts": counts},
                       artifacts=[out / MANIFEST_NAME])


def _classification(kept: list[Document], descriptions: list[debian.DebianDescription],
                    cfg: IngestConfig) -> dict[str, list[Example]]:
    """Examples from the Debian descriptions that survived cleaning (normalized text)."""
    texts = {d.location: d.text for d in kept if d.source == debian.SOURCE_NAME}
    examples = [Example(texts[d.package], d.section, d.source) for d in descriptions if d.package in texts]
    c, sp = cfg.classification, cfg.split
    tasks = build_classification(examples, top_n=c.top_n_sections, min_chars=c.min_chars,
                                 val_fraction=sp.val_fraction, test_fraction=sp.test_fraction,
                                 seed=sp.seed, max_per_split=c.max_per_split)
    if not tasks["train"]:
        raise PipelineError("classification task is empty: no Debian description passed cleaning "
                            "and classification.min_chars (or set classification.enabled: false)")
    return tasks


def _write_outputs(tmp: Path, corpus: dict[str, list[Document]], quarantine: list[QuarantineRow],
                   tasks: dict[str, list[Example]] | None) -> None:
    (tmp / "corpus").mkdir(parents=True)
    for split, docs in corpus.items():
        _write_table(tmp / "corpus" / f"{split}.parquet",
                     {"doc_id": [doc_id(d.source, d.text) for d in docs],
                      "source": [d.source for d in docs], "text": [d.text for d in docs]})
    _write_table(tmp / "quarantine.parquet", _columns(quarantine, ["source", "location", "reason", "text"]))
    if tasks is not None:
        (tmp / "tasks" / "classification").mkdir(parents=True)
        for split, examples in tasks.items():
            _write_table(tmp / "tasks" / "classification" / f"{split}.parquet",
                         _columns(examples, ["text", "label", "group"]))


def _counts(per_source: dict[str, Any], corpus: dict[str, list[Document]],
            quarantine: list[QuarantineRow], tasks: dict[str, list[Example]] | None) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "per_source": per_source,
        "per_split": {s: {"documents": len(d), "characters": sum(len(x.text) for x in d),
                          "by_source": dict(Counter(x.source for x in d))} for s, d in corpus.items()},
        "dropped_by_reason": dict(Counter(q.reason for q in quarantine)),
    }
    if tasks is not None:
        counts["classification"] = {
            "labels": sorted({e.label for rows in tasks.values() for e in rows}),
            "per_split": {s: len(rows) for s, rows in tasks.items()},
            "groups_per_split": {s: len({e.group for e in rows}) for s, rows in tasks.items()},
            "label_distribution": {s: label_distribution(rows) for s, rows in tasks.items()},
        }
    return counts


def _metrics(corpus: dict[str, list[Document]], tasks: dict[str, list[Example]] | None) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, docs in corpus.items():
        metrics[f"corpus/{split}_documents"] = len(docs)
        metrics[f"corpus/{split}_characters"] = sum(len(d.text) for d in docs)
    if tasks is not None:
        for split, rows in tasks.items():
            metrics[f"classification/{split}_examples"] = len(rows)
        metrics["classification/num_labels"] = len({e.label for rows in tasks.values() for e in rows})
        test = Counter(e.label for e in tasks["test"])
        # the accuracy of always guessing the most common label: the floor a model must beat
        metrics["classification/test_majority_fraction"] = (
            max(test.values()) / len(tasks["test"]) if test else 0.0)
    return metrics
