"""Debian package descriptions: join `Packages` and `Translation-en` on Description-md5.

`Packages` gives each binary package its Section and Source; `Translation-en` gives the
full English description. One record per unique Description-md5 (several packages can
share one description; the first package in file order keeps it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from debian.deb822 import Deb822

from llm_pipeline.data.records import QuarantineRow

SOURCE_NAME = "debian"
_PACKAGE_FIELDS = ["Package", "Source", "Section", "Description-md5"]
_LIST_ITEM = re.compile(r"\s+([*+\-o\u2022]|\d+[.)])\s")  # indented "* ", "- ", "o ", "1. "


@dataclass(frozen=True)
class PackageInfo:
    package: str
    source: str  # source package name, no version
    section: str  # without an archive-area prefix ("contrib/utils" -> "utils")


@dataclass(frozen=True)
class DebianDescription:
    md5: str
    package: str
    source: str
    section: str
    synopsis: str
    long_description: str


def _paragraphs(stream: TextIO, fields: list[str] | None = None) -> Iterable[Deb822]:
    # use_apt_pkg=False: the pure-Python parser; apt_pkg is rarely in a venv.
    return Deb822.iter_paragraphs(stream, fields=fields, use_apt_pkg=False)


def read_package_info(stream: TextIO) -> dict[str, PackageInfo]:
    """Description-md5 -> the first package that carries it."""
    by_md5: dict[str, PackageInfo] = {}
    for para in _paragraphs(stream, _PACKAGE_FIELDS):
        md5 = para.get("Description-md5")
        if not md5 or md5 in by_md5:
            continue
        package = para["Package"]
        source = para.get("Source", "").split(" (")[0].strip() or package  # "foo (1.2)" -> "foo"
        section = para.get("Section", "unknown").rsplit("/", 1)[-1]
        by_md5[md5] = PackageInfo(package, source, section)
    return by_md5


def split_description(description: str) -> tuple[str, str]:
    """Description-en -> (synopsis, long description), after Debian policy 5.6.13.

    Continuation lines start with one space; " ." separates paragraphs. Lines of a paragraph
    are joined with spaces, except that an indented list item ("  * item", "  - item",
    "  1. item") starts its own line, so lists stay lists. Paragraphs are joined by a blank line.
    """
    synopsis, *lines = description.split("\n")
    paragraphs: list[list[str]] = [[]]
    for raw in lines:
        line = raw[1:] if raw.startswith(" ") else raw
        if line.strip() == ".":
            paragraphs.append([])
            continue
        current = paragraphs[-1]
        if current and not _LIST_ITEM.match(line):
            current[-1] = f"{current[-1]} {line.strip()}"
        else:
            current.append(line.strip())
    long_description = "\n\n".join("\n".join(p) for p in paragraphs if any(p)).strip()
    return synopsis.strip(), long_description


def read_descriptions(
    packages: Iterable[TextIO],
    translations: Iterable[TextIO],
) -> tuple[list[DebianDescription], list[QuarantineRow]]:
    """Join the streams on Description-md5; drops (with a reason) go to the quarantine list."""
    info: dict[str, PackageInfo] = {}
    for stream in packages:
        for key, package_info in read_package_info(stream).items():
            info.setdefault(key, package_info)
    records: list[DebianDescription] = []
    dropped: list[QuarantineRow] = []
    seen: set[str] = set()
    for stream in translations:
        for para in _paragraphs(stream):
            md5, text = para.get("Description-md5"), para.get("Description-en")
            if not md5 or text is None or md5 in seen:
                continue
            seen.add(md5)
            synopsis, long_description = split_description(text)
            pkg = info.get(md5)
            reason = "not_in_packages" if pkg is None else "empty_long_description" if not long_description else None
            if reason:
                where = pkg.package if pkg else para.get("Package", md5)
                dropped.append(QuarantineRow(SOURCE_NAME, where, reason, text))
                continue
            assert pkg is not None  # else reason is "not_in_packages"
            records.append(DebianDescription(md5, pkg.package, pkg.source, pkg.section, synopsis, long_description))
    return records, dropped
