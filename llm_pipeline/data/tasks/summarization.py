"""Summarization: Debian long description -> its synopsis (the one-line Description).

Synopses are short (median 7 words vs 44) and written by the packager as a summary, which
makes them a natural, if terse, abstractive target. Splits follow the corpus (see build.py).
"""

from __future__ import annotations

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.corpus.cleaning import normalize_text
from llm_pipeline.data.sources.debian import DebianDescription
from llm_pipeline.data.tasks.base import TaskData, cap_splits, string_schema

SOURCE = "Debian Translation-en: long description -> synopsis, joined on Description-md5"


class SummarizationConfig(StageConfig):
    enabled: bool = True
    min_input_chars: int = Field(40, ge=0)  # shorter descriptions say too little to summarize
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled by source package; null = all


def build_summarization_task(
    cfg: SummarizationConfig, descriptions: dict[str, list[DebianDescription]], seed: str
) -> TaskData:
    splits = {
        s: [
            {"input": d.long_description, "target": target, "group": d.source}
            for d in rows
            # the target as normalized: a synopsis of markup or control characters only is empty
            if len(d.long_description) >= cfg.min_input_chars and (target := normalize_text(d.synopsis))
        ]
        for s, rows in descriptions.items()
    }
    return TaskData(
        "summarization",
        SOURCE,
        string_schema("input", "target", "group"),
        cap_splits(splits, cfg.max_per_split, seed),
        group_kind="debian_source",
        input_column="input",
    )
