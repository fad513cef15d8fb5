"""From loaded sources to the split corpus: clean -> split by stable key -> dedup across splits,
streamed in chunks through the engine's workers, with the corpus on disk in a work folder.

Splitting happens before dedup so that dedup can prefer the val/test copy of a duplicate
(see dedup.py): the split of a document depends only on its own key, never on which other
documents exist, so adding a source moves no existing document between splits.

Memory: the main process holds a chunk per worker in flight, one dedup partition, the
near-duplicate candidates and a few bytes per document; the documents stay in the work folder's
chunk files until `Corpus` writes them out (parquet, a row group per chunk).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from llm_pipeline.data.corpus.chunks import (
    CHUNK_FILE,
    QUARANTINE_COLUMNS,
    QUARANTINE_FILE,
    ChunkOptions,
    PreparedChunk,
    cut_chunks,
    prepare_chunk,
    read_arrow,
    read_signatures,
)
from llm_pipeline.data.corpus.dedup import EVAL_SPLITS, DedupInput, DedupStats, Drops, NearDupOptions, find_duplicates
from llm_pipeline.data.corpus.engine import Engine, LocalEngine
from llm_pipeline.data.corpus.splits import SPLITS, SplitSpec
from llm_pipeline.data.records import SAMPLE_CHARS, Document, QuarantineRow
from llm_pipeline.data.sources import debian
from llm_pipeline.data.sources.kinds import SourceData
from llm_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

__all__ = ["Corpus", "SplitSpec", "build_corpus"]


@dataclass
class Corpus:
    """The deduplicated corpus in `work`'s chunk files, and what happened to every record."""

    work: Path
    chunks: list[PreparedChunk]
    drops: Drops
    reader_drops: dict[str, list[QuarantineRow]]  # per source, the records its reader refused
    per_source: dict[str, dict[str, Any]]  # read / kept / dropped by reason / sampled_out
    dedup: DedupStats
    split_counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # documents / characters / by_source
    mixing: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> train documents, with copies
    max_copies: int = 1  # the most copies of one train document (mixing weights)

    def _rows(self, columns: list[str]) -> Iterator[tuple[PreparedChunk, pa.Table]]:
        """Each chunk's kept (not deduplicated away) rows, in source order."""
        dropped = pa.array(sorted(self.drops.by_seq), pa.int64())
        for chunk in self.chunks:
            table = read_arrow(self.work / CHUNK_FILE.format(chunk.index), ["seq", *columns])
            yield chunk, table.filter(pa.compute.invert(pa.compute.is_in(table.column("seq"), value_set=dropped)))

    def documents(self, split: str) -> Iterator[Document]:
        """The split's documents in source order, each once (mixing weights not applied)."""
        for chunk, table in self._rows(["location", "text", "split"]):
            table = table.filter(pa.compute.equal(table.column("split"), split))
            for location, text in zip(
                table.column("location").to_pylist(), table.column("text").to_pylist(), strict=True
            ):
                yield Document(chunk.source, location, text)

    def views(self) -> dict[str, SplitView]:
        """Each split as documents to iterate (again and again), read from disk each time: what
        the tasks built from the corpus take, so they never hold it in memory."""
        return {s: SplitView(self, s) for s in SPLITS}

    def eval_copies_in_train(self) -> int:
        """val/test documents whose exact text is also in train (0 by construction; a check on
        what is written, independent of dedup's bookkeeping). 20 bytes per document in memory."""
        hashes: dict[bool, list[np.ndarray]] = {True: [], False: []}
        for _, table in self._rows(["split", "hash"]):
            is_eval = np.isin(np.array(table.column("split").to_pylist(), dtype=object), EVAL_SPLITS)
            digests = _digests(table)
            hashes[True].append(digests[is_eval])
            hashes[False].append(digests[~is_eval])
        evals, train = (np.concatenate(hashes[k]) if hashes[k] else np.array([], "S20") for k in (True, False))
        return int(np.isin(evals, train).sum())

    def write_split(self, path: Path, split: str) -> None:
        """doc_id, source, text of the split as parquet, a row group per chunk. Train is written
        with the mixing weights: in rounds, round r holding the documents with more than r copies,
        so a source's repeats are spread out rather than back to back."""
        schema = pa.schema([("doc_id", pa.string()), ("source", pa.string()), ("text", pa.string())])
        rounds = self.max_copies if split == "train" else 1
        with pq.ParquetWriter(path, schema) as writer:
            wrote = False
            for r in range(rounds):
                for chunk, table in self._rows(["doc_id", "text", "split", "copies"]):
                    mask = pa.compute.equal(table.column("split"), split)
                    if split == "train":
                        mask = pa.compute.and_(mask, pa.compute.greater(table.column("copies"), r))
                    rows = table.filter(mask)
                    if rows.num_rows:
                        source = pa.array([chunk.source] * rows.num_rows, pa.string())
                        writer.write_table(
                            pa.table([rows.column("doc_id"), source, rows.column("text")], schema=schema)
                        )
                        wrote = True
            if not wrote:
                writer.write_table(schema.empty_table())

    def write_quarantine(self, path: Path) -> None:
        """Every dropped record: per source its reader's and cleaning's drops, then dedup's in
        source order, each duplicate naming the document it copies."""
        schema = pa.schema([(c, pa.string()) for c in QUARANTINE_COLUMNS])
        with pq.ParquetWriter(path, schema) as writer:
            writer.write_table(schema.empty_table())
            for name in self.per_source:
                rows = self.reader_drops.get(name, [])
                if rows:
                    writer.write_table(_quarantine_table(rows, schema))
                for chunk in self.chunks:
                    if chunk.source == name:
                        writer.write_table(read_arrow(self.work / QUARANTINE_FILE.format(chunk.index)).cast(schema))
            for table in self._duplicate_rows(schema):
                writer.write_table(table)

    def _chunk_rows(self, columns: list[str], seqs: set[int]) -> Iterator[tuple[PreparedChunk, list[tuple]]]:
        """Per chunk, the rows (seq, *columns) whose seq is in `seqs`, in source order; the
        others are skipped before any text becomes a Python string."""
        wanted = pa.array(sorted(seqs), pa.int64())
        for chunk in self.chunks:
            table = read_arrow(self.work / CHUNK_FILE.format(chunk.index), ["seq", *columns])
            table = table.filter(pa.compute.is_in(table.column("seq"), value_set=wanted))
            if table.num_rows:
                yield chunk, list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))

    def _duplicate_rows(self, schema: pa.Schema) -> Iterator[pa.Table]:
        if not self.drops.by_seq:
            return
        kept = {k for _, k, _ in self.drops.by_seq.values()}
        where = {  # kept seq -> source, location, split
            seq: (chunk.source, location, split)
            for chunk, rows in self._chunk_rows(["location", "split"], kept)
            for seq, location, split in rows
        }
        for chunk, rows in self._chunk_rows(["location", "text", "split"], set(self.drops.by_seq)):
            quarantined = []
            for seq, location, text, split in rows:
                reason, other, jaccard = self.drops.by_seq[seq]
                source, other_location, other_split = where[other]
                how = "same text as" if jaccard is None else f"Jaccard ~{jaccard:.2f} with"
                detail = f"{how} {source}:{other_location} ({other_split}); this one in {split}"
                quarantined.append(QuarantineRow(chunk.source, location, reason, text[:SAMPLE_CHARS], detail))
            yield _quarantine_table(quarantined, schema)


@dataclass(frozen=True)
class SplitView:
    corpus: Corpus
    split: str

    def __iter__(self) -> Iterator[Document]:
        return self.corpus.documents(self.split)


def _quarantine_table(rows: Sequence[QuarantineRow], schema: pa.Schema) -> pa.Table:
    return pa.table(
        {
            c: pa.array([getattr(q, c)[:SAMPLE_CHARS] if c == "text" else getattr(q, c) for q in rows], pa.string())
            for c in schema.names
        },
        schema=schema,
    )


def split_key_groups(data: SourceData) -> dict[str, str]:
    # Debian descriptions split by source package: the Debian-derived tasks give each
    # description its corpus split, so a package whose description is a task val/test example
    # sits in the corpus val/test split and pretraining never sees fine-tuning eval text (nor
    # the near-identical sibling descriptions of its source package). Others: their doc_id.
    if data.name != debian.SOURCE_NAME:
        return {}
    return {d.package: d.source for d in data.descriptions}


def build_corpus(
    loaded: Sequence[SourceData],
    *,
    min_chars: int,
    max_chars: int,
    markup: bool,
    split: SplitSpec,
    near: NearDupOptions,
    work: Path,
    engine: Engine | None = None,
    chunk_chars: int = 8_000_000,
    weights: dict[str, float] | None = None,
    progress: bool = False,
) -> Corpus:
    """Read every source through the engine's workers into `work` (an empty folder that
    outlives the returned Corpus), then dedup on disk."""
    options = ChunkOptions(str(work), min_chars, max_chars, markup, split, near, dict(weights or {}))
    engine = engine or LocalEngine(1)
    streams = ((data.name, data.documents, split_key_groups(data)) for data in loaded)
    bar = tqdm(desc="read+clean+minhash", unit="doc", disable=not progress)
    chunks: list[PreparedChunk] = []
    for prepared in engine.map(prepare_chunk, cut_chunks(streams, chunk_chars, options)):
        chunks.append(prepared)
        bar.update(prepared.read)
    bar.close()
    per_source: dict[str, dict[str, Any]] = {}
    for data in loaded:
        mine = [c for c in chunks if c.source == data.name]
        per_source[data.name] = {"read": sum(c.read for c in mine) + len(data.dropped), "sampled_out": data.sampled_out}
    if not any(c.kept for c in chunks):
        dropped = Counter(q.reason for data in loaded for q in data.dropped)
        for c in chunks:
            dropped.update(c.dropped)
        raise PipelineError(
            f"no documents left after cleaning (min_chars={min_chars}, max_chars={max_chars}); dropped: {dict(dropped)}"
        )

    total = sum(c.read for c in chunks)
    inputs = lambda: _dedup_inputs(work, chunks, near.enabled)
    drops, stats = find_duplicates(inputs, total, near, work)
    log.info(
        "dedup of %d documents: %d exact and %d near duplicates removed (%s s)",
        sum(c.kept for c in chunks),
        stats.exact,
        stats.near,
        stats.seconds,
    )
    corpus = Corpus(work, chunks, drops, {d.name: list(d.dropped) for d in loaded}, per_source, stats)
    _count(corpus, loaded)
    return corpus


def _dedup_inputs(work: Path, chunks: list[PreparedChunk], near: bool) -> Iterator[DedupInput]:
    for chunk in chunks:
        table = read_arrow(work / CHUNK_FILE.format(chunk.index), ["seq", "split", "hash"])
        hashes = _digests(table)
        is_eval = np.isin(np.array(table.column("split").to_pylist(), dtype=object), EVAL_SPLITS)
        load = functools.partial(read_signatures, work, chunk.index) if near else _no_signatures
        yield DedupInput(table.column("seq").to_numpy(), is_eval.astype(bool), hashes, load)


def _digests(table: pa.Table) -> np.ndarray:
    """The table's `hash` column (binary(20)) as an S20 array, without a copy per row."""
    column = table.column("hash").combine_chunks()
    return np.frombuffer(column.buffers()[1], dtype="S20", count=len(column), offset=column.offset * 20)


def _no_signatures() -> tuple[np.ndarray, np.ndarray]:
    raise AssertionError("near dedup is off")


def _count(corpus: Corpus, loaded: Sequence[SourceData]) -> None:
    """Per split and per source: documents and characters kept, drops by reason, copies."""
    documents: Counter[str] = Counter()
    characters: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    kept: Counter[str] = Counter()
    copies: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # source -> train docs, copies
    max_copies = 1
    for chunk, table in corpus._rows(["text", "split", "copies"]):
        texts, where = table.column("text"), table.column("split").to_pylist()
        lengths = pa.compute.utf8_length(texts).to_pylist()
        for split, n, c in zip(where, lengths, table.column("copies").to_pylist(), strict=True):
            documents[split] += 1
            characters[split] += n
            by_source[split][chunk.source] += 1
            if split == "train":
                copies[chunk.source][0] += 1
                copies[chunk.source][1] += c
                max_copies = max(max_copies, c)
        kept[chunk.source] += table.num_rows
    corpus.split_counts = {
        s: {"documents": documents[s], "characters": characters[s], "by_source": dict(by_source[s])} for s in SPLITS
    }
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for data in loaded:
        reasons[data.name].update(q.reason for q in data.dropped)
    for chunk in corpus.chunks:
        reasons[chunk.source].update(chunk.dropped)
    source_of = _source_of_seq(corpus.chunks)
    for seq, (reason, _, _) in corpus.drops.by_seq.items():
        reasons[source_of(seq)][reason] += 1
    for name, counts in corpus.per_source.items():
        counts["kept"] = kept[name]
        counts["dropped"] = dict(reasons[name])
    corpus.mixing = {s: {"train_documents": n, "train_effective": c} for s, (n, c) in sorted(copies.items())}
    corpus.max_copies = max_copies


def _source_of_seq(chunks: list[PreparedChunk]) -> Callable[[int], str]:
    starts = np.array([c.seq0 for c in chunks])

    def source_of(seq: int) -> str:
        return chunks[int(np.searchsorted(starts, seq, side="right")) - 1].source

    return source_of
