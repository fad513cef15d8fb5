"""The records every data module passes around, and their stable ids and hashes.

`Document` is what every source reader yields, cleaning keeps and ingest writes out;
`QuarantineRow` is every dropped record (a sample of SAMPLE_CHARS of its text is kept).
`doc_id`/`text_hash` identify a text; `unit_interval` maps a key to a stable float for
hash-based splitting and sampling. This module imports nothing of the package: sources,
corpus, tasks and loaders all import downward from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Document:
    source: str  # e.g. "debian", "bible_web", "local:notes"
    location: str  # where in the source: package name, "Genesis 1", "file.jsonl:12"
    text: str


@dataclass(frozen=True)
class QuarantineRow:
    source: str
    location: str
    reason: str  # e.g. "too_short", "duplicate", "empty_long_description"
    text: str  # a sample (SAMPLE_CHARS) is written to quarantine.parquet
    detail: str = ""  # e.g. what it duplicates, or the reader's error message

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


SAMPLE_CHARS = 2000  # of a dropped text, kept in the quarantine table


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def doc_id(source: str, text: str) -> str:
    """Stable id: sha1 of source and (normalized) text."""
    return text_hash(f"{source}\n{text}")


def unit_interval(key: str, seed: str) -> float:
    """Map (seed, key) to a float in [0, 1), uniformly.

    The same key always maps to the same value, on every machine and Python version
    (hashlib, not the salted built-in `hash`).
    """
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
