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

import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.records import Document, doc_id, unit_interval
from llm_pipeline.data.tasks.base import Row, TaskData

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
    docs: list[Document], min_chars: int, max_pairs: int | None, seed: str, negatives: Negatives = "any_document"
) -> list[Row]:
    segs = [segments(d.text, min_chars) for d in docs]
    ids = [doc_id(d.source, d.text) for d in docs]
    pools: dict[str, list[int]] = {}  # source -> docs a random B can come from
    for i, s in enumerate(segs):
        if s:
            pools.setdefault(docs[i].source, []).append(i)
    everything = [i for pool in pools.values() for i in pool]
    if len(everything) < 2:
        return []
    positions = [(i, k) for i, s in enumerate(segs) for k in range(len(s) - 1)]
    u = lambda key: unit_interval(key, f"{seed}/nsp")
    positions.sort(key=lambda p: u(f"{ids[p[0]]}:{p[1]}"))
    rows = []
    for i, k in positions[:max_pairs]:
        key = f"{ids[i]}:{k}"
        # a separate hash for the coin: the sort key's value is skewed low after the cap
        is_next = u(f"{key}/coin") < 0.5
        if is_next:
            b = segs[i][k + 1]
        else:
            own = pools[docs[i].source]
            others = own if negatives == "same_source" and len(own) > 1 else everything
            # uniform over the other documents: draw among all but the last, swap i for the last
            j = others[int(u(f"{key}/doc") * (len(others) - 1))]
            j = j if j != i else others[-1]
            b = segs[j][int(u(f"{key}/seg") * len(segs[j]))]
        rows.append({"text_a": segs[i][k], "text_b": b, "is_next": int(is_next), "group": ids[i]})
    return rows


def build_nsp_task(cfg: NSPConfig, corpus: dict[str, list[Document]], seed: str) -> TaskData:
    build = lambda docs: build_pairs(docs, cfg.min_segment_chars, cfg.max_per_split, seed, cfg.negatives)
    splits = {split: build(docs) for split, docs in corpus.items()}
    return TaskData("nsp", SOURCE, SCHEMA, splits, group_kind="doc_id", input_column="text_a", label_column="is_next")
