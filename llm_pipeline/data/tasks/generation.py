"""Generation: held-out corpus documents cut into a prompt and its true continuation.

Only val and test documents are used (train stays empty): a model pretrained on the train
split has never seen them, so its continuation of the prompt can be compared to the real one
(and the whole held-out corpus split is what perplexity is measured on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.records import Document, doc_id
from llm_pipeline.data.tasks.base import Row, TaskData, cap_rows, string_schema

SOURCE = "corpus val/test documents: first prompt_words words -> the next continuation words"
_WORD = re.compile(r"\S+")


class GenerationTaskConfig(StageConfig):
    enabled: bool = True
    prompt_words: int = Field(32, ge=1)
    continuation_words: int = Field(64, ge=1)  # at most this many words of the real text
    min_continuation_words: int = Field(8, ge=1)  # shorter documents are skipped
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled documents; null = all


def cut_document(
    text: str, prompt_words: int, continuation_words: int, min_continuation_words: int
) -> tuple[str, str] | None:
    """(prompt, continuation) cut at word boundaries, the text's own spacing kept."""
    words = list(_WORD.finditer(text))
    if len(words) < prompt_words + min_continuation_words:
        return None
    last = words[min(len(words), prompt_words + continuation_words) - 1]
    return text[: words[prompt_words - 1].end()], text[words[prompt_words].start() : last.end()]


def build_generation_rows(docs: Iterable[Document], cfg: GenerationTaskConfig) -> Iterator[Row]:
    """A (prompt, continuation) row per long enough document, as the documents stream by."""
    for d in docs:
        cut = cut_document(d.text, cfg.prompt_words, cfg.continuation_words, cfg.min_continuation_words)
        if cut:
            yield {"prompt": cut[0], "continuation": cut[1], "group": doc_id(d.source, d.text)}


def build_generation_task(cfg: GenerationTaskConfig, corpus: Mapping[str, Iterable[Document]], seed: str) -> TaskData:
    splits = {
        s: [] if s == "train" else cap_rows(build_generation_rows(docs, cfg), cfg.max_per_split, seed)
        for s, docs in corpus.items()
    }
    return TaskData(
        "generation",
        SOURCE,
        string_schema("prompt", "continuation", "group"),
        splits,
        group_kind="doc_id",
        input_column="prompt",
    )
