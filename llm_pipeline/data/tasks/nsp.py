"""Next-sentence pairs (BERT's NSP): segment B follows A in the same document, or not.

Segments are sentences (a chapter's verses run together in the corpus text; a description's
paragraphs are split too), short ones merged into the next. Each pair position is a coin
flip by hash: heads, B is the next segment; tails, B is a segment of another document of the
split. `negatives: any_document` draws that document from the whole split, as BERT did, so topic
and style tell many NotNext pairs apart; `same_source` keeps it within A's source (a Bible verse
after a package description is then never a negative), which leaves coherence and word overlap
as the only signals: harder, and more than a small encoder learns in a few thousand steps.
Pairs are built per split from that split's own documents, so no val/test text shows up in train pairs.
"""

from __future__ import annotations

import bisect
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

import pyarrow as pa
from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.records import Document, doc_id, unit_interval
from llm_pipeline.data.tasks.base import Row, TaskData, smallest

SOURCE = "corpus documents of each split: consecutive sentences vs a sentence of another document"
SCHEMA = pa.schema([("text_a", pa.string()), ("text_b", pa.string()), ("is_next", pa.int64()), ("group", pa.string())])
# A sentence ends at . ! ? (maybe followed by a closing quote/bracket) before a space and an
# upper-case letter or digit (maybe after an opening quote); newlines always end a segment.
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)]))[^\S\n]+(?=[\"'“‘(]?[A-Z0-9])|\n+")


Negatives = Literal["same_source", "any_document"]


class NSPConfig(StageConfig):
    enabled: bool = True
    min_segment_chars: int = Field(20, ge=1)  # shorter sentences are merged into the next
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled pair positions; null = all
    # where a NotNext B comes from: another document of the same source (coherence only), or
    # any other document of the split (BERT's recipe: topic and style count too)
    negatives: Negatives = "any_document"


def segments(text: str, min_chars: int) -> list[str]:
    out: list[str] = []
    pending = ""
    for part in _BOUNDARY.split(text):
        pending = f"{pending} {part.strip()}".strip()
        if len(pending) >= min_chars:
            out.append(pending)
            pending = ""
    if pending and out:
        out[-1] = f"{out[-1]} {pending}"
    return out


def build_pairs(
    docs: Iterable[Document], min_chars: int, max_pairs: int | None, seed: str, negatives: Negatives = "any_document"
) -> list[Row]:
    """The split's pairs, in the hash order of their positions (document, segment), the first
    max_pairs of them. `docs` is read twice (a list, or a view that restarts), holding a
    few numbers per document and the chosen pairs' segments, never the split's text."""
    u = lambda key: unit_interval(key, f"{seed}/nsp")
    # pass 1: each document's segment count and source; the chosen positions
    counts = array("l")
    pools: dict[str, array] = {}  # source -> documents with segments, the pool a random B comes from
    keyed = (
        ((u(f"{identity}:{k}"), i, k), (i, k, identity))
        for i, identity, n in _scan(docs, min_chars, counts, pools)
        for k in range(n - 1)
    )
    chosen = smallest(keyed, max_pairs)
    everything = array("q")  # every pool's documents, source by source (8 bytes a document)
    for pool in pools.values():
        everything.extend(pool)
    if len(everything) < 2:
        return []
    # pass 2: what each chosen position needs: B (the next segment, or one of another document)
    plan: list[tuple[int, int, int, int, bool, str]] = []  # (i, k) -> B is (j, b); the coin; A's doc_id
    needed: dict[int, set[int]] = {}  # document -> the segments the pairs take from it
    for i, k, identity in chosen:
        key = f"{identity}:{k}"
        # a separate hash for the coin: the sort key's value is skewed low after the cap
        is_next = u(f"{key}/coin") < 0.5
        if is_next:
            j, b = i, k + 1
        else:
            source = _source_of(i, pools)
            own = pools[source]
            others = own if negatives == "same_source" and len(own) > 1 else everything
            # uniform over the other documents: draw among all but the last, swap i for the last
            j = others[int(u(f"{key}/doc") * (len(others) - 1))]
            j = j if j != i else others[-1]
            b = int(u(f"{key}/seg") * counts[j])
        plan.append((i, k, j, b, is_next, identity))
        needed.setdefault(i, set()).add(k)
        needed.setdefault(j, set()).add(b)
    # pass 3: the needed segments' text
    text: dict[tuple[int, int], str] = {}
    for i, doc in enumerate(docs):
        if i in needed:
            segs = segments(doc.text, min_chars)
            text.update(((i, k), segs[k]) for k in needed[i])
    return [
        {"text_a": text[i, k], "text_b": text[j, b], "is_next": int(is_next), "group": identity}
        for i, k, j, b, is_next, identity in plan
    ]


def _scan(
    docs: Iterable[Document], min_chars: int, counts: array, pools: dict[str, array]
) -> Iterator[tuple[int, str, int]]:
    """(index, doc_id, segment count) per document, filling counts and the per-source pools."""
    for i, doc in enumerate(docs):
        n = len(segments(doc.text, min_chars))
        counts.append(n)
        if n:
            pools.setdefault(doc.source, array("q")).append(i)
        yield i, doc_id(doc.source, doc.text), n


def _source_of(i: int, pools: dict[str, array]) -> str:
    return next(source for source, pool in pools.items() if _contains(pool, i))


def _contains(pool: array, i: int) -> bool:
    at = bisect.bisect_left(pool, i)  # a pool lists its documents in order
    return at < len(pool) and pool[at] == i


def build_nsp_task(cfg: NSPConfig, corpus: Mapping[str, Iterable[Document]], seed: str) -> TaskData:
    build = lambda docs: build_pairs(docs, cfg.min_segment_chars, cfg.max_per_split, seed, cfg.negatives)
    splits = {split: build(docs) for split, docs in corpus.items()}
    return TaskData("nsp", SOURCE, SCHEMA, splits, group_kind="doc_id", input_column="text_a", label_column="is_next")
