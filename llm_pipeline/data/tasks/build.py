"""Build every enabled task from the split corpus (and the sources tasks need of their own).

Debian-derived tasks (classification, summarization, translation) give each description
the split its cleaned text landed in within the corpus, so no task's val/test example is a
pretraining train text, whatever key the corpus splits by; `leakage` then checks it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.data.corpus.splits import SPLITS
from llm_pipeline.data.records import Document
from llm_pipeline.data.sources import debian
from llm_pipeline.data.sources.snapshot import SourceFiles
from llm_pipeline.data.tasks.base import SplitParams, TaskData, task_card
from llm_pipeline.data.tasks.classification import ClassificationConfig, build_classification_task
from llm_pipeline.data.tasks.generation import GenerationTaskConfig, build_generation_task
from llm_pipeline.data.tasks.leakage import (
    OverlapPolicy,
    build_train_index,
    count_overlap,
    drop_overlap,
    held_out_queries,
)
from llm_pipeline.data.tasks.local import LocalTaskConfig, build_local_task, local_task_files
from llm_pipeline.data.tasks.nsp import NSPConfig, build_nsp_task
from llm_pipeline.data.tasks.qa import DEB_PACKAGE as QA_DEB_PACKAGE
from llm_pipeline.data.tasks.qa import QAConfig, build_qa_task
from llm_pipeline.data.tasks.summarization import SummarizationConfig, build_summarization_task
from llm_pipeline.data.tasks.translation import TranslationConfig, build_translation_task, index_languages
from llm_pipeline.errors import PipelineError

log = logging.getLogger(__name__)
BUILT_IN = ("classification", "summarization", "translation", "qa", "nsp", "generation")


class TasksConfig(StageConfig):
    classification: ClassificationConfig = ClassificationConfig()
    summarization: SummarizationConfig = SummarizationConfig()
    translation: TranslationConfig = TranslationConfig()
    qa: QAConfig = QAConfig()
    nsp: NSPConfig = NSPConfig()
    generation: GenerationTaskConfig = GenerationTaskConfig()
    local: list[LocalTaskConfig] = Field(default_factory=list)  # users' own task files
    # val/test examples whose input is pretraining train text (or whose group is in train):
    # "drop" removes them (counted in the report), "report" keeps and counts them
    held_out_overlap: OverlapPolicy = "drop"

    @model_validator(mode="after")
    def _unique_names(self) -> TasksConfig:
        names = [t.name for t in self.local]
        clash = sorted({n for n in names if n in BUILT_IN or names.count(n) > 1})
        if clash:
            raise ValueError(f"local task names must be unique and not a built-in task: {clash}")
        return self


@dataclass
class BuiltTasks:
    tasks: dict[str, TaskData]
    inputs: list[Path] = field(default_factory=list)  # files fetched/read for the tasks
    skipped: dict[str, str] = field(default_factory=dict)  # enabled task -> why it was not built

    def cards(self) -> dict[str, Any]:
        return {name: task_card(t) for name, t in self.tasks.items()}


def descriptions_by_split(
    corpus: Mapping[str, Iterable[Document]],
    descriptions: list[debian.DebianDescription],
) -> dict[str, list[debian.DebianDescription]]:
    """Descriptions whose text survived cleaning, in their corpus split, with the cleaned text."""
    if not descriptions:
        return {s: [] for s in SPLITS}  # no Debian source: no need to read the corpus
    where = {d.location: (s, d.text) for s, docs in corpus.items() for d in docs if d.source == debian.SOURCE_NAME}
    out: dict[str, list[debian.DebianDescription]] = {s: [] for s in SPLITS}
    for d in descriptions:
        if d.package in where:
            split, text = where[d.package]
            out[split].append(replace(d, long_description=text))
    return out


def upstream_needs(cfg: TasksConfig, has_debian_source: bool) -> tuple[tuple[str, ...], list[str]]:
    """What the enabled tasks read from the Debian archive: (index languages, .deb packages)."""
    languages = index_languages(cfg.translation) if has_debian_source and cfg.translation.enabled else ()
    return languages, [QA_DEB_PACKAGE] if cfg.qa.enabled else []


def local_files(cfg: TasksConfig) -> list[Path]:
    """The users' task files (tasks.local), as the builders find them."""
    return [path for local in cfg.local for path in local_task_files(local)]


def build_tasks(
    cfg: TasksConfig,
    corpus: Mapping[str, Iterable[Document]],  # split -> its documents, each iterable more than once
    descriptions: list[debian.DebianDescription],
    split: SplitParams,
    *,
    files: SourceFiles,
    cache_dir: str,
) -> BuiltTasks:
    built = BuiltTasks({})
    seed = split.seed
    by_split = descriptions_by_split(corpus, descriptions)
    has_debian = any(by_split.values())
    for name in ("classification", "summarization", "translation"):
        if getattr(cfg, name).enabled and not has_debian:
            built.skipped[name] = "needs a debian_descriptions source"
    if has_debian and cfg.classification.enabled:
        built.tasks["classification"] = build_classification_task(cfg.classification, by_split, seed)
    if has_debian and cfg.summarization.enabled:
        built.tasks["summarization"] = build_summarization_task(cfg.summarization, by_split, seed)
    if has_debian and cfg.translation.enabled:
        built.tasks["translation"], used = build_translation_task(cfg.translation, by_split, seed, files)
        built.inputs += used
    if cfg.qa.enabled:
        built.tasks["qa"], used = build_qa_task(cfg.qa, split, files, cache_dir)
        built.inputs += used
    if cfg.nsp.enabled:
        built.tasks["nsp"] = build_nsp_task(cfg.nsp, corpus, seed)
    if cfg.generation.enabled:
        built.tasks["generation"] = build_generation_task(cfg.generation, corpus, seed)
    for local in cfg.local:
        built.tasks[local.name], used = build_local_task(local, split)
        built.inputs += used
    for name, task in built.tasks.items():
        _require_examples(name, task)
    return built


def _require_examples(name: str, task: TaskData) -> None:
    # generation has no train split by design: its examples are the held-out documents
    needed = ("val", "test") if name == "generation" else ("train",)
    if not any(task.splits[s] for s in needed):
        where = f"tasks.{name}.enabled" if name in BUILT_IN else f"the tasks.local entry {name!r}"
        raise PipelineError(
            f"task {name!r} has no {'/'.join(needed)} examples (too few or too short "
            f"documents for it?); add data or set {where}: false"
        )


def check_leakage(
    built: BuiltTasks,
    train: Iterable[Document],
    descriptions: list[debian.DebianDescription],
    policy: OverlapPolicy = "drop",
) -> dict[str, Any]:
    """Apply the overlap policy to val/test, then count what overlaps the corpus train split.

    Returns {"policy", "dropped": {task: {split: n}}, "total": n left, "per_task": counts}."""
    wanted = held_out_queries(built.tasks.values())  # one pass over train, keeping only what is looked up
    index = build_train_index(train, {d.package: d.source for d in descriptions}, debian.SOURCE_NAME, wanted)
    dropped = {}
    if policy == "drop":
        dropped = {name: drop_overlap(task, index) for name, task in built.tasks.items()}
    report = {name: count_overlap(task, index) for name, task in built.tasks.items()}
    total = sum(n for splits in report.values() for counts in splits.values() for n in counts.values())
    if total:
        log.warning("task val/test examples overlapping the pretraining train split: %s", report)
    return {"policy": policy, "dropped": dropped, "total": total, "per_task": report}
