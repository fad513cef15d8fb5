"""The World English Bible (SWORD module engWEB2015eb) as one document per chapter.

The module's OSIS markup puts footnotes between words with no space
(`God<note>…</note><w>created</w>`), so a plain tag strip (pysword's clean=True too)
glues words: "Godcreated". We read the raw markup and replace notes and titles with a
space before stripping the other tags.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path

from pysword.modules import SwordModules

from llm_pipeline.data.records import Document
from llm_pipeline.errors import PipelineError

SOURCE_NAME = "bible_web"
DEB_PACKAGE = "sword-text-web"
MODULE = "engWEB2015eb"

# The last verse of a chapter can carry what follows the chapter's end marker: the last one
# of Revelation holds the whole WEB glossary (20k chars). It is not part of the chapter.
_AFTER_CHAPTER_END = re.compile(r"<chapter\b[^>]*\beID=[^>]*>.*", re.DOTALL)
_DROP_WITH_CONTENT = re.compile(r"<(note|title)\b[^>]*>.*?</\1>", re.DOTALL)
# Word-level tags (<w>, <q>, <seg>, ...) sit inside words' neighbourhood: strip them to nothing.
# Structural ones (<l>, <lg>, <div>, <lb/>, <chapter/>, ...) separate lines: replace by a space.
_INLINE_TAG = re.compile(r"</?(w|q|seg|name|rdg|transChange|hi|foreign|divineName|catchWord)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
_SPACE_BEFORE_CLOSING = re.compile(r"\s+([,.;:!?’”)\]])")
_SPACE_AFTER_OPENING = re.compile(r"([“(\[])\s+")
_SPACES = re.compile(r"\s+")


def osis_to_text(markup: str) -> str:
    """Raw OSIS verse(s) -> plain text with words and punctuation spaced as printed."""
    text = _AFTER_CHAPTER_END.sub(" ", markup)
    text = _DROP_WITH_CONTENT.sub(" ", text)
    text = _INLINE_TAG.sub("", text)
    text = _ANY_TAG.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_CLOSING.sub(r"\1", text)
    return _SPACE_AFTER_OPENING.sub(r"\1", text).strip()


def open_bible(sword_dir: str | Path, module: str = MODULE):
    """The pysword bible object for `module` under a SWORD data dir (has mods.d/)."""
    sword_dir = Path(sword_dir)
    if not (sword_dir / "mods.d").is_dir():
        raise PipelineError(f"{sword_dir}: not a SWORD data dir (no mods.d/ inside)")
    modules = SwordModules(str(sword_dir))
    found = modules.parse_modules()
    if module not in found:
        raise PipelineError(f"{sword_dir}: no SWORD module {module!r} (found: {sorted(found)})")
    bible = modules.get_bible_from_module(module)
    # pysword decompresses the whole book block for every verse it reads (40+ s for the
    # whole Bible); remembering the last few blocks makes it a few seconds.
    bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    return bible


def iter_chapters(sword_dir: str | Path, module: str = MODULE) -> Iterator[Document]:
    """One Document per chapter ("Genesis 1"), verses joined with spaces; empty ones skipped."""
    bible = open_bible(sword_dir, module)
    for testament_books in bible.get_structure().get_books().values():
        for book in testament_books:
            for chapter in range(1, book.num_chapters + 1):
                verses = bible.get_iter(books=book.name, chapters=chapter, clean=False)
                text = " ".join(t for t in map(osis_to_text, verses) if t)
                if text:
                    yield Document(SOURCE_NAME, f"{book.name} {chapter}", text)
