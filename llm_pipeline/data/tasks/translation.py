"""Translation: English -> de/fr/it from the Debian Description Translation Project (DDTP).

`Translation-<lang>` files carry `Description-md5` (of the *English* description) and
`Description-<lang>`; joining on the md5 pairs each translation with exactly the English text
it was made from (stale translations have another md5 and never match). Pairs: the synopses,
plus each paragraph of the long description when both sides have the same paragraph count.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.corpus.cleaning import normalize_text
from llm_pipeline.data.sources import apt_sources
from llm_pipeline.data.sources.debian import DebianDescription, split_description
from llm_pipeline.data.sources.snapshot import SourceFiles
from llm_pipeline.data.tasks.base import Row, TaskData, cap_rows, empty_splits, string_schema
from llm_pipeline.errors import PipelineError

SOURCE = "Debian Description Translation Project: Translation-{de,fr,it} joined to Translation-en on Description-md5"


class TranslationConfig(StageConfig):
    enabled: bool = True
    languages: list[str] = Field(default_factory=lambda: ["de", "fr", "it"], min_length=1)
    paragraphs: bool = True  # also aligned paragraphs (when counts match)
    max_per_split: int | None = Field(None, ge=1)  # per language, hash-sampled pairs; null = all


def translation_files(files: list[Path], lang: str) -> list[Path]:
    return [p for p in files if fnmatch.fnmatch(p.name, f"*Translation-{lang}*")]


def read_translations(streams: Iterable[TextIO], lang: str, wanted: set[str] | None = None) -> dict[str, str]:
    """Description-md5 -> Description-<lang> as deb822 holds it (first one wins), for the md5s
    in `wanted` (all if None). A line scan, not a deb822 parser: the files hold ~50k stanzas
    of which we keep a few thousand, and the scan is several times faster."""
    prefix = f"Description-{lang}:"
    out: dict[str, str] = {}
    for stream in streams:
        md5: str | None = None
        lines: list[str] = []
        in_field = False
        for line in itertools.chain(stream, ["\n"]):  # a final blank line ends the last stanza
            if not line.strip():
                if md5 and lines and md5 not in out and (wanted is None or md5 in wanted):
                    out[md5] = "\n".join(lines)
                md5, lines, in_field = None, [], False
            elif line.startswith(" "):  # continuation of the current field
                if in_field:
                    lines.append(line.rstrip("\n"))
            else:
                in_field = line.startswith(prefix)
                if in_field:
                    lines = [line[len(prefix) :].strip()]
                elif line.startswith("Description-md5:"):
                    md5 = line.split(":", 1)[1].strip()
    return out


def translation_pairs(d: DebianDescription, translated: str, lang: str, paragraphs: bool) -> list[Row]:
    """Synopsis pair, then paragraph pairs if both long descriptions split alike.

    `d.long_description` is the cleaned corpus text (paragraphs joined by a blank line); the
    translation goes through the same parse and normalization, so paragraphs line up."""
    synopsis, long_text = split_description(translated)
    pairs = [(normalize_text(d.synopsis), normalize_text(synopsis))]
    if paragraphs:
        en = d.long_description.split("\n\n")
        other = normalize_text(long_text).split("\n\n")
        if len(en) == len(other):
            pairs += zip(en, other)
    return [{"input": a, "target": b, "lang": lang, "group": d.source} for a, b in pairs if a and b]


def _streams(paths: list[Path]):
    for path in paths:
        with apt_sources.open_index(path) as stream:
            yield stream


def index_languages(cfg: TranslationConfig) -> tuple[str, ...]:
    """The Translation-<lang> index files the task reads: a superset of the corpus' ("en"
    first), since apt-get update drops list files its last run did not ask for."""
    return ("en", *[lang for lang in cfg.languages if lang != "en"])


def build_translation_task(
    cfg: TranslationConfig, descriptions: dict[str, list[DebianDescription]], seed: str, files: SourceFiles
) -> tuple[TaskData, list[Path]]:
    translations = files.index_files(index_languages(cfg)).translations
    splits = empty_splits()
    used: list[Path] = []
    matched: dict[str, int] = {}
    for lang in cfg.languages:
        paths = translation_files(translations, lang)
        if not paths:
            raise PipelineError(
                f"tasks.translation.languages: no Translation-{lang} file among the fetched index files "
                f"(the DDTP may not cover {lang!r})"
            )
        used += paths
        wanted = {d.md5 for rows in descriptions.values() for d in rows}
        table = read_translations(_streams(paths), lang, wanted)
        matched[lang] = 0
        for split, rows in descriptions.items():
            pairs = [
                p for d in rows if d.md5 in table for p in translation_pairs(d, table[d.md5], lang, cfg.paragraphs)
            ]
            matched[lang] += len({d.md5 for d in rows if d.md5 in table})
            # ordered by input, not group: a source package can hold dozens of paragraphs
            splits[split] += cap_rows(pairs, cfg.max_per_split, seed, order_key=lambda r: r["input"])
    task = TaskData(
        "translation",
        SOURCE,
        string_schema("input", "target", "lang", "group"),
        splits,
        group_kind="debian_source",
        input_column="input",
        label_column="lang",
        notes={"descriptions_with_translation": matched},
    )
    return task, used
