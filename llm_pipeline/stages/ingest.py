"""ingest: fetch/read every source, clean, dedup, split; write the corpus and task tables.

Outputs (under output_dir):
  corpus/{train,val,test}.parquet               doc_id, source, text
  tasks/<task>/{train,val,test}.parquet        one folder per enabled task (llm_pipeline/data/tasks/)
  quarantine.parquet                            source, location, reason, text, detail (every drop)
  manifest.json                                 inputs with sha256, counts, label distributions
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from llm_pipeline.data.corpus.build import Corpus, build_corpus
from llm_pipeline.data.corpus.dedup import NearDupOptions
from llm_pipeline.data.corpus.engine import Engine, open_engine
from llm_pipeline.data.corpus.splits import SPLITS, SplitSpec
from llm_pipeline.data.ingest_config import IngestConfig
from llm_pipeline.data.sources.kinds import (
    LoadContext,
    SourceData,
    load_source,
    source_name,
)
from llm_pipeline.data.sources.snapshot import AptCache, Snapshot, SourceFiles
from llm_pipeline.data.tasks.base import write_task
from llm_pipeline.data.tasks.build import BuiltTasks, build_tasks, check_leakage
from llm_pipeline.io import MANIFEST_NAME, atomic_path, build_manifest, describe_inputs, write_json, write_run_record
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.runs import NULL_TRACKER, Tracker

log = logging.getLogger(__name__)


def source_files(cfg: IngestConfig) -> SourceFiles:
    """Where the upstream files come from: the fetch stage's snapshot, or the apt cache."""
    return Snapshot(Path(cfg.snapshot_dir)) if cfg.snapshot_dir else AptCache(cfg.cache_dir, cfg.refresh)


def load_sources(cfg: IngestConfig) -> list[SourceData]:
    """Every configured source, through the source registry (file readers stream lazily)."""
    ctx = LoadContext(
        source_files(cfg), cfg.cache_dir, cfg.progress, cfg.on_error, cfg.cleaning.max_record_bytes, cfg.split.seed
    )
    loaded = []
    for src in cfg.sources:
        log.info("reading source %s", source_name(src))
        loaded.append(load_source(src, ctx))
    return loaded


def run(cfg: IngestConfig, tracker: Tracker = NULL_TRACKER) -> StageResult:
    engine_cfg = cfg.engine
    with (
        tempfile.TemporaryDirectory(prefix="llm-pipeline-ingest-", dir=engine_cfg.work_dir) as work,
        open_engine(engine_cfg) as engine,
    ):
        log.info("engine: %s, %d worker(s), chunks of %s MB", engine_cfg.kind, engine.workers, engine_cfg.chunk_mb)
        loaded = load_sources(cfg)
        return _run(cfg, tracker, loaded, build_corpus_with(cfg, loaded, engine, Path(work)))


def build_corpus_with(cfg: IngestConfig, loaded: list[SourceData], engine: Engine, work: Path) -> Corpus:
    sp, cl, dd = cfg.split, cfg.cleaning, cfg.dedup
    return build_corpus(
        loaded,
        min_chars=cl.min_chars,
        max_chars=cl.max_chars,
        markup=cl.strip_markup,
        split=SplitSpec(sp.val_fraction, sp.test_fraction, sp.seed),
        near=NearDupOptions(dd.near, dd.num_perm, dd.threshold, dd.shingle_size),
        work=work,
        engine=engine,
        chunk_chars=int(cfg.engine.chunk_mb * 1_000_000),
        weights={source_name(src): src.weight for src in cfg.sources},
        progress=cfg.progress,
    )


def _run(cfg: IngestConfig, tracker: Tracker, loaded: list[SourceData], built: Corpus) -> StageResult:
    sp = cfg.split
    descriptions = [d for data in loaded for d in data.descriptions]
    # tasks see each document once (no mixing weights), streamed from the work folder
    corpus = built.views()
    tasks = build_tasks(cfg.tasks, corpus, descriptions, sp, files=source_files(cfg), cache_dir=cfg.cache_dir)
    leakage = check_leakage(tasks, corpus["train"], descriptions, cfg.tasks.held_out_overlap)

    out = Path(cfg.output_dir)
    counts = _counts(built, tasks, leakage)
    weights = {source_name(src): src.weight for src in cfg.sources}
    counts["mixing"] = {s: {"weight": weights.get(s, 1.0), **v} for s, v in built.mixing.items()}
    counts["dedup"] = {**vars(built.dedup), "eval_docs_with_exact_copy_in_train": built.eval_copies_in_train()}
    # the manifest holds what the outputs are made of; durations go to the report only
    manifest_counts = {**counts, "dedup": {k: v for k, v in counts["dedup"].items() if k != "seconds"}}
    inputs = describe_inputs([p for data in loaded for p in data.inputs] + tasks.inputs)
    snapshot = source_files(cfg)
    if isinstance(snapshot, Snapshot):
        snapshot.check_local(inputs)
    with atomic_path(out) as tmp:
        _write_outputs(tmp, built, tasks)
        manifest = build_manifest(
            "ingest",
            inputs=inputs,
            outputs={
                "corpus": {s: f"corpus/{s}.parquet" for s in SPLITS},
                "tasks": {t: {s: f"tasks/{t}/{s}.parquet" for s in SPLITS} for t in tasks.tasks},
                "quarantine": "quarantine.parquet",
            },
            counts=manifest_counts,
            extra={
                "split_keys": {
                    "debian": "source package (Debian-derived tasks keep the corpus split)",
                    "other": "doc_id",
                },
            },
        )
        write_json(tmp / MANIFEST_NAME, manifest)
    write_run_record(out, mlflow_run_id=tracker.run_id)
    return StageResult(
        metrics=_metrics(built, tasks),
        report={"output_dir": str(out), "manifest": str(out / MANIFEST_NAME), "counts": counts},
        artifacts=[out / MANIFEST_NAME],
    )


def _write_outputs(tmp: Path, corpus: Corpus, tasks: BuiltTasks) -> None:
    (tmp / "corpus").mkdir(parents=True)
    for split in SPLITS:
        corpus.write_split(tmp / "corpus" / f"{split}.parquet", split)
    corpus.write_quarantine(tmp / "quarantine.parquet")
    for name, task in tasks.tasks.items():
        write_task(task, tmp / "tasks" / name)


def _counts(corpus: Corpus, tasks: BuiltTasks, leakage: dict[str, Any]) -> dict[str, Any]:
    dropped: Counter[str] = Counter()
    for source in corpus.per_source.values():
        dropped.update(source["dropped"])
    counts: dict[str, Any] = {
        "per_source": corpus.per_source,
        "per_split": corpus.split_counts,
        "dropped_by_reason": dict(dropped),
    }
    counts["tasks"] = tasks.cards()  # the task cards: sizes, labels, lengths, source
    counts["tasks_skipped"] = tasks.skipped
    counts["task_leakage"] = leakage  # task val/test vs corpus train; expected total 0
    return counts


def _metrics(corpus: Corpus, tasks: BuiltTasks) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, counts in corpus.split_counts.items():
        metrics[f"corpus/{split}_documents"] = counts["documents"]
        metrics[f"corpus/{split}_characters"] = counts["characters"]
    for name, task in tasks.tasks.items():
        for split, rows in task.splits.items():
            metrics[f"{name}/{split}_examples"] = len(rows)
    if "classification" in tasks.tasks:
        splits = tasks.tasks["classification"].splits
        metrics["classification/num_labels"] = len({r["label"] for rows in splits.values() for r in rows})
        test = Counter(r["label"] for r in splits["test"])
        # the accuracy of always guessing the most common label: the floor a model must beat
        metrics["classification/test_majority_fraction"] = max(test.values()) / len(splits["test"]) if test else 0.0
    return metrics
