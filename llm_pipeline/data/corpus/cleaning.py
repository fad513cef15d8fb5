"""Normalize text (NFC, markup remnants, control chars, whitespace) and length-filter documents.

Every drop becomes a `QuarantineRow` (both records live in data/records.py). Exact and
near-duplicate removal live in dedup.py.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable

from llm_pipeline.data.records import SAMPLE_CHARS, Document, QuarantineRow

# Markup remnants: only tags with these names, so "<package>" or "a <b" in prose survive.
# Block-level tags become a line break, inline ones vanish (they sit inside sentences).
_BLOCK_TAGS = "br|p|div|li|ul|ol|dl|dt|dd|tr|table|h[1-6]|blockquote|pre|hr|lg|l|lb|chapter|verse|div1"
_INLINE_TAGS = (
    "a|b|i|u|em|strong|span|font|sup|sub|small|big|tt|code|abbr|cite|mark|del|ins|img|"
    "td|th|tbody|thead|html|head|body|w|q|seg|hi|transChange|divineName|foreign|catchWord|"
    "rdg|milestone"
)
_TAG = r"</?(?:{})\b(?:\s[^<>]*)?/?>"
_DROP_WITH_CONTENT = re.compile(r"<(script|style|note)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK = re.compile(_TAG.format(_BLOCK_TAGS), re.IGNORECASE)
_INLINE = re.compile(_TAG.format(_INLINE_TAGS), re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Cc (control) characters other than newline, plus BOM and zero-width space (format chars
# that only break words apart for a tokenizer); tabs become spaces first.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace that are not newlines
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n{3,}")  # keep paragraph breaks ("\n\n"), no more


def strip_markup(text: str) -> str:
    """Drop HTML/OSIS tags (script/style/note with their content), then decode entities.

    Entities are decoded last, so an escaped "&lt;b&gt;" stays visible as "<b>".
    """
    text = _DROP_WITH_CONTENT.sub(" ", text)
    text = _BLOCK.sub("\n", text)
    text = _INLINE.sub("", text)
    return _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)


def normalize_text(text: str, markup: bool = True) -> str:
    """Markup stripped (if `markup`), NFC, control chars dropped (keep \\n), spaces collapsed,
    at most one blank line, trimmed."""
    if markup:
        text = strip_markup(text)
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_documents(
    docs: Iterable[Document],
    min_chars: int,
    max_chars: int,
    markup: bool = True,
) -> tuple[list[Document], list[QuarantineRow]]:
    """Normalize each text; quarantine the ones outside [min_chars, max_chars] after it."""
    kept: list[Document] = []
    dropped: list[QuarantineRow] = []
    for doc in docs:
        text = normalize_text(doc.text, markup)
        if len(text) < min_chars or len(text) > max_chars:
            reason = "too_short" if len(text) < min_chars else "too_long"
            dropped.append(
                QuarantineRow(
                    doc.source,
                    doc.location,
                    reason,
                    (text or doc.text)[:SAMPLE_CHARS],
                    f"{len(text)} chars after cleaning; kept: {min_chars}..{max_chars}",
                )
            )
            continue
        kept.append(Document(doc.source, doc.location, text))
    return kept, dropped
