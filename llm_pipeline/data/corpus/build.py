"""From loaded sources to the split corpus: clean -> split by stable key -> dedup across splits.

Splitting happens before dedup so that dedup can prefer the val/test copy of a duplicate
(see dedup.py): the split of a document depends only on its own key, never on which other
documents exist, so adding a source moves no existing document between splits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from llm_pipeline.data.corpus.cleaning import clean_documents
from llm_pipeline.data.corpus.dedup import EVAL_SPLITS, DedupStats, NearDupOptions, remove_duplicates
from llm_pipeline.data.corpus.splits import SPLITS, assign_split
from llm_pipeline.data.records import Document, QuarantineRow, doc_id, text_hash
from llm_pipeline.data.sources import debian
from llm_pipeline.data.sources.kinds import SourceData
from llm_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSpec:
    val_fraction: float
    test_fraction: float
    seed: str


@dataclass
class Corpus:
    splits: dict[str, list[Document]]  # split -> documents, in source order
    quarantine: list[QuarantineRow]
    per_source: dict[str, dict[str, Any]]  # read / kept / dropped by reason / sampled_out
    dedup: DedupStats


def split_key(doc: Document, groups: dict[str, str]) -> str:
    # Debian descriptions split by source package: the Debian-derived tasks give each
    # description its corpus split, so a package whose description is a task val/test example
    # sits in the corpus val/test split and pretraining never sees fine-tuning eval text (nor
    # the near-identical sibling descriptions of its source package). Others: their doc_id.
    if doc.source == debian.SOURCE_NAME:
        return groups[doc.location]
    return doc_id(doc.source, doc.text)


def build_corpus(
    loaded: Sequence[SourceData],
    *,
    min_chars: int,
    max_chars: int,
    markup: bool,
    split: SplitSpec,
    near: NearDupOptions,
    progress: bool = False,
) -> Corpus:
    kept: list[Document] = []
    quarantine: list[QuarantineRow] = []
    per_source: dict[str, dict[str, Any]] = {}
    for data in loaded:
        docs = tqdm(data.documents, desc=f"read+clean {data.name}", unit="doc", disable=not progress)
        ok, dropped = clean_documents(docs, min_chars, max_chars, markup)  # consumes the reader
        kept += ok
        quarantine += data.dropped + dropped
        per_source[data.name] = {"read": len(ok) + len(data.dropped) + len(dropped), "sampled_out": data.sampled_out}
    if not kept:
        raise PipelineError(
            f"no documents left after cleaning (min_chars={min_chars}, "
            f"max_chars={max_chars}); dropped: {dict(Counter(q.reason for q in quarantine))}"
        )

    groups = {d.package: d.source for data in loaded for d in data.descriptions}
    where = [assign_split(split_key(d, groups), split.val_fraction, split.test_fraction, split.seed) for d in kept]
    keep, duplicates, stats = remove_duplicates(kept, where, near)
    log.info(
        "dedup of %d documents: %d exact and %d near duplicates removed (%s s)",
        len(kept),
        stats.exact,
        stats.near,
        stats.seconds,
    )
    quarantine += duplicates

    splits: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for i in keep:
        splits[where[i]].append(kept[i])
    for name, counts in per_source.items():
        counts["kept"] = sum(d.source == name for docs in splits.values() for d in docs)
        counts["dropped"] = dict(Counter(q.reason for q in quarantine if q.source == name))
    return Corpus(splits, quarantine, per_source, stats)


def eval_copies_in_train(splits: dict[str, list[Document]]) -> int:
    """val/test documents whose exact text is also in train (0 by construction; a check)."""
    train = {text_hash(d.text) for d in splits["train"]}
    return sum(text_hash(d.text) in train for s in EVAL_SPLITS for d in splits[s])
