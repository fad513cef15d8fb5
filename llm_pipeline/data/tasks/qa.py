"""Question answering from WordNet: "What does '<lemma>' mean?" -> the sense's gloss.

WordNet 3.0 comes from the Debian package `wordnet-base` (/usr/share/wordnet/data.<pos>).
Data file lines (wndb(5WN)): `synset_offset lex_filenum ss_type w_cnt word lex_id [word
lex_id...] p_cnt [ptr...] [frames...] | gloss`, w_cnt in hex; lines starting with two spaces
are the license header. A gloss is the definition, then example sentences: `def; "ex"; "ex"`.
One example per (lemma, sense); group = the lowercased lemma, so all senses of a word (a
question with several right answers) land in one split.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.sources import apt_sources
from llm_pipeline.data.sources.snapshot import SourceFiles
from llm_pipeline.data.tasks.base import Row, SplitParams, TaskData, cap_splits, split_by_hash, string_schema
from llm_pipeline.errors import PipelineError

DEB_PACKAGE = "wordnet-base"
DATA_DIR = "usr/share/wordnet"
SOURCE = "WordNet 3.0 glosses, Debian package wordnet-base (data.noun/verb/adj/adv)"
PartOfSpeech = Literal["noun", "verb", "adj", "adv"]
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")  # syntactic marker on adjectives: "outback(a)"


def _all_parts_of_speech() -> list[PartOfSpeech]:
    return ["noun", "verb", "adj", "adv"]


class QAConfig(StageConfig):
    enabled: bool = True
    parts_of_speech: list[PartOfSpeech] = Field(default_factory=_all_parts_of_speech, min_length=1)
    max_per_split: int | None = Field(None, ge=1)  # hash-sampled by lemma (~207k senses in all)


def parse_data_line(line: str) -> tuple[list[str], str] | None:
    """One data.<pos> line -> (lemmas with spaces, definition); None for header lines."""
    if line.startswith("  ") or not line.strip():
        return None
    head, sep, gloss = line.partition(" | ")
    fields = head.split()
    if not sep or len(fields) < 6:
        raise ValueError("expected 'offset lex_filenum ss_type w_cnt word lex_id ... | gloss'")
    w_cnt = int(fields[3], 16)
    words = fields[4 : 4 + 2 * w_cnt : 2]
    lemmas = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in words]
    definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
    return lemmas, definition


def iter_senses(path: Path) -> Iterator[Row]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                parsed = parse_data_line(line)
            except ValueError as exc:
                raise PipelineError(f"{path}:{lineno}: not a WordNet data line ({exc})") from None
            if parsed is None or not parsed[1]:
                continue
            lemmas, definition = parsed
            for lemma in dict.fromkeys(lemmas):
                yield {"input": f"What does '{lemma}' mean?", "target": definition, "group": lemma.lower()}


def build_qa_from_dir(cfg: QAConfig, data_dir: Path, split: SplitParams) -> TaskData:
    files = [data_dir / f"data.{pos}" for pos in cfg.parts_of_speech]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PipelineError(f"WordNet data file(s) not found: {', '.join(missing)}")
    seen: set[tuple[str, str]] = set()  # "bank"/"Bank" can carry the same gloss twice
    rows = []
    for path in files:
        for row in iter_senses(path):
            if (row["group"], row["target"]) not in seen:
                seen.add((row["group"], row["target"]))
                rows.append(row)
    splits = cap_splits(split_by_hash(rows, split), cfg.max_per_split, split.seed)
    return TaskData(
        "qa",
        SOURCE,
        string_schema("input", "target", "group"),
        splits,
        group_kind="lemma",
        input_column="input",
        notes={"senses_read": len(rows)},
    )


def build_qa_task(cfg: QAConfig, split: SplitParams, files: SourceFiles, cache_dir: str) -> tuple[TaskData, list[Path]]:
    deb = files.deb(DEB_PACKAGE)
    root = apt_sources.extract_deb(deb, Path(cache_dir).resolve() / DEB_PACKAGE)
    return build_qa_from_dir(cfg, root / DATA_DIR, split), [deb]
