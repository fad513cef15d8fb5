"""One chunk of the corpus, prepared by a worker: cleaned, split, hashed, MinHashed, on disk.

`cut_chunks` cuts the sources' document stream into chunks of about `chunk_chars` characters
(a chunk never spans two sources, so its drops stay in source order). `prepare_chunk` runs in
an engine worker and writes, under the work folder:

    chunk-<index>.arrow       the kept documents: seq, location, text, split, doc_id, hash, copies
    signatures-<index>.npy    (kept, num_perm) uint64 MinHash signatures (near dedup only)
    quarantine-<index>.arrow  what cleaning dropped: source, location, reason, text, detail

`seq` numbers every read document in source order across sources; it orders duplicates
(the first in source order wins) and names documents between passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc

from llm_pipeline.data.corpus.cleaning import clean_documents
from llm_pipeline.data.corpus.dedup import NearDupOptions, hash_bytes, signatures
from llm_pipeline.data.corpus.mixing import copies
from llm_pipeline.data.corpus.splits import SplitSpec, assign_split
from llm_pipeline.data.records import Document, QuarantineRow, doc_id

CHUNK_FILE = "chunk-{:06d}.arrow"
SIGNATURE_FILE = "signatures-{:06d}.npy"
QUARANTINE_FILE = "quarantine-{:06d}.arrow"
QUARANTINE_COLUMNS = ["source", "location", "reason", "text", "detail"]


@dataclass(frozen=True)
class ChunkOptions:
    """What every worker needs besides its chunk (small: sent with each chunk)."""

    work: str  # the work folder
    min_chars: int
    max_chars: int
    markup: bool
    split: SplitSpec
    near: NearDupOptions
    weights: dict[str, float]  # source -> mixing weight (copies of each train document)


@dataclass
class Chunk:
    index: int
    seq0: int  # seq of its first document
    source: str
    docs: list[Document]
    groups: list[str | None]  # per document: its split key when fixed by the source (a Debian
    # description's source package), else None: the doc_id of its cleaned text
    options: ChunkOptions


@dataclass
class PreparedChunk:
    """What a worker reports back (the documents themselves stay on disk)."""

    index: int
    source: str
    seq0: int
    read: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # cleaning drops by reason


def cut_chunks(
    sources: Iterable[tuple[str, Iterable[Document], dict[str, str]]], chunk_chars: int, options: ChunkOptions
) -> Iterator[Chunk]:
    """(name, documents, groups: location -> split key) per source -> chunks in source order."""
    index = seq = 0
    for name, documents, groups in sources:
        docs: list[Document] = []
        size = 0
        for doc in documents:
            docs.append(doc)
            size += len(doc.text)
            if size >= chunk_chars:
                yield Chunk(index, seq, name, docs, [groups.get(d.location) for d in docs], options)
                index, seq, docs, size = index + 1, seq + len(docs), [], 0
        if docs:
            yield Chunk(index, seq, name, docs, [groups.get(d.location) for d in docs], options)
            index, seq = index + 1, seq + len(docs)


def prepare_chunk(chunk: Chunk) -> PreparedChunk:
    opts, work = chunk.options, Path(chunk.options.work)
    seq_of = {id(d): chunk.seq0 + i for i, d in enumerate(chunk.docs)}
    group_of = {id(d): g for d, g in zip(chunk.docs, chunk.groups, strict=True)}
    cleaned, dropped = _clean_keeping_identity(chunk.docs, opts)
    kept = [c for _, c in cleaned]
    ids = [doc_id(d.source, d.text) for d in kept]
    splits = [
        assign_split(group_of[id(raw)] or i, opts.split.val_fraction, opts.split.test_fraction, opts.split.seed)
        for (raw, _), i in zip(cleaned, ids, strict=True)
    ]
    weight = opts.weights.get(chunk.source, 1.0)
    table = pa.table(
        {
            "seq": pa.array([seq_of[id(raw)] for raw, _ in cleaned], pa.int64()),
            "location": pa.array([d.location for d in kept], pa.string()),
            "text": pa.array([d.text for d in kept], pa.string()),
            "split": pa.array(splits, pa.string()),
            "doc_id": pa.array(ids, pa.string()),
            "hash": _binary20(hash_bytes([d.text for d in kept])),
            "copies": pa.array([copies(d, weight, opts.split.seed) for d in kept], pa.int32()),
        }
    )
    write_arrow(work / CHUNK_FILE.format(chunk.index), table)
    if opts.near.enabled:
        sigs, has = signatures([d.text for d in kept], opts.near)
        np.save(work / SIGNATURE_FILE.format(chunk.index), np.concatenate([sigs, has[:, None].astype(np.uint64)], 1))
    write_arrow(
        work / QUARANTINE_FILE.format(chunk.index),
        pa.table({c: pa.array([getattr(q, c) for q in dropped], pa.string()) for c in QUARANTINE_COLUMNS}),
    )
    return PreparedChunk(
        chunk.index, chunk.source, chunk.seq0, len(chunk.docs), len(kept), dict(Counter(q.reason for q in dropped))
    )


def _clean_keeping_identity(
    docs: list[Document], opts: ChunkOptions
) -> tuple[list[tuple[Document, Document]], list[QuarantineRow]]:
    """clean_documents, pairing each kept (cleaned) document with the raw one it came from."""
    cleaned: list[tuple[Document, Document]] = []
    dropped: list[QuarantineRow] = []
    for raw in docs:
        ok, bad = clean_documents([raw], opts.min_chars, opts.max_chars, opts.markup)
        cleaned += [(raw, d) for d in ok]
        dropped += bad
    return cleaned, dropped


def _binary20(digests: np.ndarray) -> pa.Array:
    # from the raw buffer: numpy's S20 drops trailing zero bytes when turned into Python bytes
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(20), len(digests), [None, pa.py_buffer(digests.tobytes())])


def write_arrow(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_arrow(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A chunk file, memory-mapped (its pages are read as they are touched)."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return table.select(columns) if columns else table


def read_signatures(work: Path, index: int) -> tuple[np.ndarray, np.ndarray]:
    both = np.load(work / SIGNATURE_FILE.format(index))
    return both[:, :-1], both[:, -1].astype(bool)
