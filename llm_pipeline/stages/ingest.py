"""ingest: fetch/read every source, clean, dedup, split; write the corpus and task tables.

Outputs (under output_dir):
  corpus/{train,val,test}.parquet               doc_id, source, text
  tasks/<task>/{train,val,test}.parquet        one folder per enabled task (llm_pipeline/data/tasks/)
  quarantine.parquet                            source, location, reason, text, detail (every drop)
  manifest.json                                 inputs with sha256, counts, label distributions
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llm_pipeline.data.corpus.build import SplitSpec, build_corpus, eval_copies_in_train
from llm_pipeline.data.corpus.dedup import NearDupOptions
from llm_pipeline.data.corpus.mixing import apply_weights, weighted_counts
from llm_pipeline.data.corpus.splits import SPLITS
from llm_pipeline.data.ingest_config import IngestConfig
from llm_pipeline.data.records import SAMPLE_CHARS, Document, QuarantineRow, doc_id
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


def _write_table(path: Path, columns: dict[str, list[str]]) -> None:
    pq.write_table(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), path)


def _columns(rows: Iterable[Any], names: list[str]) -> dict[str, list[str]]:
    rows = list(rows)
    return {n: [getattr(r, n) for r in rows] for n in names}


def run(cfg: IngestConfig, tracker: Tracker = NULL_TRACKER) -> StageResult:
    loaded = load_sources(cfg)
    sp, cl, dd = cfg.split, cfg.cleaning, cfg.dedup
    built = build_corpus(
        loaded,
        min_chars=cl.min_chars,
        max_chars=cl.max_chars,
        markup=cl.strip_markup,
        split=SplitSpec(sp.val_fraction, sp.test_fraction, sp.seed),
        near=NearDupOptions(dd.near, dd.num_perm, dd.threshold, dd.shingle_size),
        progress=cfg.progress,
    )
    corpus, quarantine, per_source = built.splits, built.quarantine, built.per_source
    descriptions = [d for data in loaded for d in data.descriptions]
    # mixing weights change the written train split only; tasks and val/test see each doc once
    weights = {source_name(src): src.weight for src in cfg.sources}
    weighted_train = apply_weights(corpus["train"], weights, sp.seed)

    tasks = build_tasks(cfg.tasks, corpus, descriptions, sp, files=source_files(cfg), cache_dir=cfg.cache_dir)
    leakage = check_leakage(tasks, corpus["train"], descriptions, cfg.tasks.held_out_overlap)

    out = Path(cfg.output_dir)
    counts = _counts(per_source, corpus, quarantine, tasks, leakage)
    counts["mixing"] = weighted_counts(corpus["train"], weighted_train, weights)
    counts["dedup"] = {**vars(built.dedup), "eval_docs_with_exact_copy_in_train": eval_copies_in_train(corpus)}
    # the manifest holds what the outputs are made of; durations go to the report only
    manifest_counts = {**counts, "dedup": {k: v for k, v in counts["dedup"].items() if k != "seconds"}}
    inputs = describe_inputs([p for data in loaded for p in data.inputs] + tasks.inputs)
    snapshot = source_files(cfg)
    if isinstance(snapshot, Snapshot):
        snapshot.check_local(inputs)
    with atomic_path(out) as tmp:
        _write_outputs(tmp, {**corpus, "train": weighted_train}, quarantine, tasks)
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
        metrics=_metrics(corpus, tasks),
        report={"output_dir": str(out), "manifest": str(out / MANIFEST_NAME), "counts": counts},
        artifacts=[out / MANIFEST_NAME],
    )


def _write_outputs(
    tmp: Path, corpus: dict[str, list[Document]], quarantine: list[QuarantineRow], tasks: BuiltTasks
) -> None:
    (tmp / "corpus").mkdir(parents=True)
    for split, docs in corpus.items():
        _write_table(
            tmp / "corpus" / f"{split}.parquet",
            {
                "doc_id": [doc_id(d.source, d.text) for d in docs],
                "source": [d.source for d in docs],
                "text": [d.text for d in docs],
            },
        )
    quarantine = [replace(q, text=q.text[:SAMPLE_CHARS]) for q in quarantine]
    _write_table(tmp / "quarantine.parquet", _columns(quarantine, ["source", "location", "reason", "text", "detail"]))
    for name, task in tasks.tasks.items():
        write_task(task, tmp / "tasks" / name)


def _counts(
    per_source: dict[str, Any],
    corpus: dict[str, list[Document]],
    quarantine: list[QuarantineRow],
    tasks: BuiltTasks,
    leakage: dict[str, Any],
) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "per_source": per_source,
        "per_split": {
            s: {
                "documents": len(d),
                "characters": sum(len(x.text) for x in d),
                "by_source": dict(Counter(x.source for x in d)),
            }
            for s, d in corpus.items()
        },
        "dropped_by_reason": dict(Counter(q.reason for q in quarantine)),
    }
    counts["tasks"] = tasks.cards()  # the task cards: sizes, labels, lengths, source
    counts["tasks_skipped"] = tasks.skipped
    counts["task_leakage"] = leakage  # task val/test vs corpus train; expected total 0
    return counts


def _metrics(corpus: dict[str, list[Document]], tasks: BuiltTasks) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, docs in corpus.items():
        metrics[f"corpus/{split}_documents"] = len(docs)
        metrics[f"corpus/{split}_characters"] = sum(len(d.text) for d in docs)
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
