"""Exact (content hash) and near-duplicate (MinHash LSH) removal across all sources and splits,
with everything that grows with the corpus on disk.

Rule: documents are visited val/test first, then train, each group in source order; a document
that equals (or nearly equals) one already kept is dropped. So when a duplicate cluster spans
splits, the val/test member stays and the train copies go: no eval text has a copy in train.
Within one split the first in source order wins. MinHash uses word shingles (lowercased
`\\w+` runs), so near-dedup suits space-separated languages; exact dedup works for all.

How it scales (the multi-pass shape of datatrove's and NeMo Curator's MinHash dedup, with our
greedy rule): each document is a row (seq = its place in source order, visit = its place in the
visit order above). Exact: (sha1, visit) rows are spread over hash partitions on disk; in each
partition the first visit of a hash is kept. Near: each surviving document's signature
(num_perm uint64) goes to one file indexed by seq; its b LSH bands become (band key, visit) rows
spread over key partitions; in each partition the documents sharing a key give candidate edges
(earlier -> later). One pass over the edges in visit order then decides exactly as an in-memory
MinHashLSH would: a document goes when a kept earlier candidate's estimated Jaccard reaches the
threshold (the best one named). Memory: one partition, the edges (near-duplicate candidates, not
documents) and a byte per document.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from llm_pipeline.data.records import text_hash

EVAL_SPLITS = ("val", "test")
_WORD = re.compile(r"\w+")
# candidates are verified below, so let LSH favour recall: at the default 0.8 threshold,
# (0.1, 0.9) finds a pair of similarity 0.84 96% of the time; the default (0.5, 0.5) 63%
LSH_WEIGHTS = (0.1, 0.9)
ROWS_PER_PARTITION = 2_000_000  # ~32-48 MB of rows held at once per partition
EXACT_ROW = np.dtype([("hash", "S20"), ("visit", "<i8")])
BAND_ROW = np.dtype([("key", "<u8"), ("visit", "<i8")])


@dataclass(frozen=True)
class NearDupOptions:
    enabled: bool = True
    num_perm: int = 128  # MinHash permutations: more = finer Jaccard estimate, slower
    threshold: float = 0.8  # estimated Jaccard similarity of shingle sets at which to drop
    shingle_size: int = 5  # words per shingle

    def bands(self) -> tuple[int, int]:
        """(b bands, r rows each), as MinHashLSH picks them for these options."""
        return _optimal_param(self.threshold, self.num_perm, *LSH_WEIGHTS)


@dataclass
class DedupStats:
    exact: int = 0  # dropped: same normalized text as a kept document
    near: int = 0  # dropped: MinHash-similar to a kept document
    train_dropped_for_eval: int = 0  # of those, train copies of a val/test document
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Drops:
    """What dedup removed: seq -> (reason, the kept seq it copies, estimated Jaccard or None)."""

    by_seq: dict[int, tuple[str, int, float | None]] = field(default_factory=dict)

    def add(self, seq: int, reason: str, kept: int, jaccard: float | None = None) -> None:
        self.by_seq[seq] = (reason, kept, jaccard)


def shingles(text: str, size: int) -> set[bytes]:
    """Word `size`-grams of the lowercased text (the whole text if it has fewer words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def signatures(texts: Sequence[str], opts: NearDupOptions) -> tuple[np.ndarray, np.ndarray]:
    """(len(texts), num_perm) uint64 MinHash signatures (fixed seed, so any chunking of the
    corpus gives the same rows) and a bool per text: has it words at all (else a zero row)."""
    sets = [shingles(t, opts.shingle_size) for t in texts]
    has = np.array([bool(s) for s in sets], dtype=bool)
    out = np.zeros((len(texts), opts.num_perm), dtype=np.uint64)
    if has.any():
        hashes = MinHash.bulk([s for s in sets if s], num_perm=opts.num_perm, seed=1)
        out[has] = np.stack([h.hashvalues for h in hashes]).astype(np.uint64)
    return out, has


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def band_keys(sigs: np.ndarray, opts: NearDupOptions) -> np.ndarray:
    """(n, b) uint64: one key per LSH band (r signature values), distinct per band index.

    Two documents share a key when their r values in that band are all equal (as MinHashLSH's
    bucket keys) or, with odds of about 2^-64 per pair, by a hash collision: then the pair is a
    candidate that the Jaccard check still has to pass.
    """
    b, r = opts.bands()
    keys = np.empty((len(sigs), b), dtype=np.uint64)
    for band in range(b):
        h = np.full(len(sigs), (band + 1) * 0x9E3779B97F4A7C15 % 2**64, dtype=np.uint64)
        for col in range(band * r, (band + 1) * r):
            h = _mix(h ^ sigs[:, col])
        keys[:, band] = h
    return keys


class PartitionFiles:
    """Rows of one dtype spread over `count` append-only files by a key, read back one at a time."""

    def __init__(self, folder: Path, name: str, count: int, dtype: np.dtype) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{name}-{i:04d}.bin" for i in range(count)]
        self.dtype = dtype
        for path in self.paths:
            path.write_bytes(b"")

    def append(self, rows: np.ndarray, partition: np.ndarray) -> None:
        for i in np.unique(partition):
            with open(self.paths[i], "ab") as f:
                f.write(rows[partition == i].tobytes())

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            yield np.fromfile(path, dtype=self.dtype)
            path.unlink()


def partition_count(rows: int) -> int:
    return max(1, -(-rows // ROWS_PER_PARTITION))


@dataclass
class DedupInput:
    """One chunk's documents as dedup sees them, in seq order."""

    seq: np.ndarray  # int64
    is_eval: np.ndarray  # bool: val/test (visited first)
    hashes: np.ndarray  # S20: sha1 of the normalized text
    signatures: Callable[[], tuple[np.ndarray, np.ndarray]]  # lazily: (sigs, has words)


def find_duplicates(
    chunks: Callable[[], Iterable[DedupInput]], total: int, opts: NearDupOptions, work: Path
) -> tuple[Drops, DedupStats]:
    """Dedup over the documents `chunks()` yields (it is called once per pass); `total` is one
    more than the largest seq. Scratch files live under `work` and are removed as they are read."""
    stats, drops = DedupStats(), Drops()
    t0 = time.perf_counter()
    _exact(chunks, total, work, drops, stats)
    stats.exact = len(drops.by_seq)
    stats.seconds["exact"] = round(time.perf_counter() - t0, 3)
    if opts.enabled:
        _near(chunks, total, opts, work, drops, stats)
        stats.near = len(drops.by_seq) - stats.exact
    return drops, stats


def _visit(seq: np.ndarray, is_eval: np.ndarray, total: int) -> np.ndarray:
    """The visit order as one int64: val/test documents (by seq) before train ones (by seq)."""
    return seq + np.where(is_eval, 0, total).astype(np.int64)


def _exact(chunks: Callable[[], Iterable[DedupInput]], total: int, work: Path, drops: Drops, stats: DedupStats) -> None:
    parts = PartitionFiles(work / "exact", "hash", partition_count(total), EXACT_ROW)
    n = len(parts.paths)
    for chunk in chunks():
        rows = np.empty(len(chunk.seq), dtype=EXACT_ROW)
        rows["hash"], rows["visit"] = chunk.hashes, _visit(chunk.seq, chunk.is_eval, total)
        head = np.frombuffer(chunk.hashes.tobytes(), np.uint8).reshape(-1, 20)[:, :8].copy().view(">u8")[:, 0]
        parts.append(rows, (head % np.uint64(n)).astype(np.int64))  # a sha1's first 8 bytes: uniform
    for rows in parts:
        rows = rows[np.argsort(rows, order=("hash", "visit"))]
        starts = np.r_[True, rows["hash"][1:] != rows["hash"][:-1]]
        firsts = np.maximum.accumulate(np.where(starts, np.arange(len(rows)), 0))  # its run's first row
        for i in np.flatnonzero(~starts).tolist():  # rows not the first visit of their hash
            visit, kept = int(rows["visit"][i]), int(rows["visit"][firsts[i]])
            drops.add(visit % total, "duplicate", kept % total)
            stats.train_dropped_for_eval += visit >= total and kept < total


def _near(
    chunks: Callable[[], Iterable[DedupInput]],
    total: int,
    opts: NearDupOptions,
    work: Path,
    drops: Drops,
    stats: DedupStats,
) -> None:
    t0 = time.perf_counter()
    b, _ = opts.bands()
    parts = PartitionFiles(work / "bands", "band", partition_count(total * b), BAND_ROW)
    sig_path = work / "signatures.u64"
    with open(sig_path, "wb") as sig_file:
        for chunk in chunks():
            sigs, has = chunk.signatures()
            if len(chunk.seq):  # the chunk's seq range as one block (seqs cleaning dropped stay zero)
                block = np.zeros((int(chunk.seq[-1] - chunk.seq[0]) + 1, opts.num_perm), dtype=np.uint64)
                block[chunk.seq - chunk.seq[0]] = sigs
                sig_file.seek(int(chunk.seq[0]) * opts.num_perm * 8)
                sig_file.write(block.tobytes())
            live = has & np.array([s not in drops.by_seq for s in chunk.seq.tolist()], dtype=bool)
            keys = band_keys(sigs[live], opts)  # (n_live, b)
            rows = np.empty(keys.size, dtype=BAND_ROW)
            rows["key"] = keys.reshape(-1)
            rows["visit"] = np.repeat(_visit(chunk.seq[live], chunk.is_eval[live], total), b)
            parts.append(rows, (rows["key"] % np.uint64(len(parts.paths))).astype(np.int64))
        sig_file.truncate(total * opts.num_perm * 8)
    t1 = time.perf_counter()
    edges = _candidate_edges(parts)
    sigs = np.memmap(sig_path, dtype=np.uint64, mode="r", shape=(total, opts.num_perm))
    stats.train_dropped_for_eval += _greedy(edges, sigs, total, opts, drops)
    sig_path.unlink()
    stats.seconds["minhash"] = round(t1 - t0, 3)
    stats.seconds["lsh"] = round(time.perf_counter() - t1, 3)


def _candidate_edges(parts: PartitionFiles) -> np.ndarray:
    """(m, 2) int64 unique (later visit, earlier visit) pairs that share an LSH band key,
    sorted by later then earlier visit."""
    found = []
    for rows in parts:
        rows = rows[np.argsort(rows, order=("key", "visit"))]
        starts = np.flatnonzero(np.r_[True, rows["key"][1:] != rows["key"][:-1]])
        sizes = np.diff(np.r_[starts, len(rows)])
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
            visits = rows["visit"][start : start + size]  # ascending
            later, earlier = np.triu_indices(size, 1)[::-1]
            found.append(np.stack([visits[later], visits[earlier]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)  # unique rows, sorted lexicographically


def _greedy(edges: np.ndarray, sigs: np.ndarray, total: int, opts: NearDupOptions, drops: Drops) -> int:
    """Decide each later document of `edges` in visit order; returns how many train documents
    went as copies of a val/test one."""
    kept, train_for_eval = np.ones(total, dtype=bool), 0
    if not len(edges):
        return 0
    starts = np.flatnonzero(np.r_[True, edges[1:, 0] != edges[:-1, 0]])  # each later document's first edge
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), len(edges)], strict=True):
        visit = int(edges[start, 0])
        doc, visits = visit % total, edges[start:end, 1]
        visits = visits[kept[visits % total]]  # the earlier candidates still kept
        if not len(visits):
            continue
        earlier = visits % total
        # MinHash.jaccard: the share of equal signature values; ties go to the later document
        # in source order (the max of (jaccard, seq)), as an in-memory index would
        jaccard = np.count_nonzero(sigs[earlier] == sigs[doc], axis=1) / opts.num_perm
        best, at = max(zip(jaccard.tolist(), range(len(earlier)), strict=True), key=lambda p: (p[0], earlier[p[1]]))
        if best >= opts.threshold:
            kept[doc] = False
            drops.add(doc, "near_duplicate", int(earlier[at]), best)
            train_for_eval += visit >= total and int(visits[at]) < total
    return train_for_eval


def hash_bytes(texts: Sequence[str]) -> np.ndarray:
    """S20 sha1 digests of the texts (the exact-dedup key)."""
    return np.array([bytes.fromhex(text_hash(t)) for t in texts], dtype="S20")
