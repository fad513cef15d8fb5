"""Normalize, length-filter and exactly dedup documents; every drop becomes a quarantine row.

`Document` is the record every source reader yields and the stage writes out.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Document:
    source: str      # e.g. "debian", "bible_web", "local:notes"
    location: str    # where in the source: package name, "Genesis 1", "file.jsonl:12"
    text: str


@dataclass(frozen=True)
class QuarantineRow:
    source: str
    location: str
    reason: str      # e.g. "too_short", "duplicate", "empty_long_description"
    text: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# Cc (control) characters other than newline; tabs become spaces first so they count as spaces.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")           # runs of whitespace that are not newlines
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")        # keep paragraph breaks ("\n\n"), no more


def normalize_text(text: str) -> str:
    """NFC, drop control chars (keep \\n), collapse spaces, at most one blank line, trim."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\t", " ")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def doc_id(source: str, text: str) -> str:
    """Stable id: sha1 of source and (normalized) text."""
    return text_hash(f"{source}\n{text}")


def clean_documents(docs: Iterable[Document], min_chars: int, max_chars: int,
                    seen: set[str] | None = None) -> tuple[list[Document], list[QuarantineRow]]:
    """Normalize each text, drop too short / too long / exact duplicates (first one wins).

    `seen` holds sha1s of texts kept so far; pass the same set to dedup across sources.
    """
    seen = set() if seen is None else seen
    kept: list[Document] = []
    dropped: list[QuarantineRow] = []
    for doc in docs:
        text = normalize_text(doc.text)
        reason = _drop_reason(text, min_chars, max_chars, seen)
        if reason:
            dropped.append(QuarantineRow(doc.source, doc.location, reason, text or doc.text))
            continue
        seen.add(text_hash(text))
        kept.append(Document(doc.source, doc.location, text))
    return kept, dropped


def _drop_reason(text: str, min_chars: int, max_chars: int, seen: set[str]) -> str | None:
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if text_hash(text) in seen:
        return "duplicate"
    return None
