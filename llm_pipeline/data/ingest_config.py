"""What ingest reads from params/ingest.yaml: the sources, cleaning, dedup, splits and tasks.

Its own module, below the stages: fetch reads the same file (which sources to snapshot), and
no stage imports another.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.data.corpus.engine import EngineConfig
from llm_pipeline.data.sources.kinds import BibleSourceConfig, DebianSourceConfig, OnError, SourceConfig, source_name
from llm_pipeline.data.tasks.build import TasksConfig


class CleaningConfig(StageConfig):
    min_chars: int = Field(40, ge=0)  # shorter normalized texts are quarantined
    max_chars: int = Field(20000, ge=1)  # longer ones too (likely dumps, not prose)
    strip_markup: bool = True  # HTML/OSIS tags and &entities; removed
    max_record_bytes: int = Field(1_000_000, ge=1)  # raw records above this are quarantined
    # (too_long) by the reader, never held in memory

    @model_validator(mode="after")
    def _record_fits(self) -> CleaningConfig:
        if self.max_record_bytes < self.max_chars:
            raise ValueError("max_record_bytes must be >= max_chars")
        return self


class DedupConfig(StageConfig):
    # exact dedup (same normalized text) always runs; near-dup uses MinHash LSH on word shingles
    near: bool = True
    num_perm: int = Field(128, ge=16)
    threshold: float = Field(0.8, gt=0, le=1)  # estimated Jaccard similarity that counts as a copy
    shingle_size: int = Field(5, ge=1)  # words per shingle


class SplitConfig(StageConfig):
    val_fraction: float = Field(0.02, ge=0, lt=1)
    test_fraction: float = Field(0.02, ge=0, lt=1)
    seed: str = "llm-pipeline"  # changing it reshuffles every split

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1")
        return self


def _default_sources() -> list[Any]:
    return [DebianSourceConfig(kind="debian_descriptions"), BibleSourceConfig(kind="bible_web")]


class IngestConfig(StageConfig):
    output_dir: str = "data/ingest"
    # The fetch stage's snapshot (data/snapshot in the pipeline): upstream files are read from
    # it, never fetched, and local files must match the sha256 it recorded. null: no fetch
    # stage, fetch into cache_dir on first use (refresh: refetch even when cached).
    snapshot_dir: str | None = None
    cache_dir: str = ".cache/sources"  # apt lists and .debs (snapshot_dir: null), unpacked .debs
    refresh: bool = False
    progress: bool = True  # tqdm bars
    sources: list[SourceConfig] = Field(default_factory=_default_sources, min_length=1)
    on_error: OnError = "fail"  # a bad record: fail the run, or quarantine it
    cleaning: CleaningConfig = CleaningConfig()
    dedup: DedupConfig = DedupConfig()
    split: SplitConfig = SplitConfig()
    tasks: TasksConfig = TasksConfig()  # downstream tasks (llm_pipeline/data/tasks/)
    engine: EngineConfig = EngineConfig()  # where the per-chunk work runs (data/corpus/engine.py)

    @model_validator(mode="after")
    def _distinct_source_names(self) -> IngestConfig:
        # the name is the `source` column and part of doc_id: two sources must not share one
        names = [source_name(s) for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(
                f"two sources are named {sorted({n for n in names if names.count(n) > 1})}; give each a distinct `name`"
            )
        return self
