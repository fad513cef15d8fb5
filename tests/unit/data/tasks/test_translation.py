import functools

import pytest

from llm_pipeline.data.sources import apt_sources
from llm_pipeline.data.sources.debian import DebianDescription
from llm_pipeline.data.sources.snapshot import AptCache
from llm_pipeline.data.tasks.translation import (
    TranslationConfig,
    build_translation_task,
    read_translations,
    translation_pairs,
)
from llm_pipeline.errors import PipelineError

TRANSLATION_DE = """\
Package: foo
Description-md5: m1
Description-de: Ein Werkzeug
 Erster Absatz über das
 Werkzeug.
 .
 Zweiter Absatz.

Package: bar
Description-md5: m2
Description-de: Eine Bibliothek
 Nur ein Absatz.

Package: stale
Description-md5: old
Description-de: Veraltet
 Nicht mehr aktuell.
"""


def _desc(md5, long_text, source="src"):
    return DebianDescription(md5, f"pkg-{md5}", source, "utils", "A tool", long_text)


def test_read_translations_keys_by_md5(tmp_path):
    path = tmp_path / "Translation-de"
    path.write_text(TRANSLATION_DE)
    with open(path) as fh:
        table = read_translations([fh], "de")
    assert set(table) == {"m1", "m2", "old"}
    assert table["m2"].startswith("Eine Bibliothek\n")


def test_pairs_align_paragraphs_only_when_counts_match():
    text = "Ein Werkzeug\n Erster Absatz über das\n Werkzeug.\n .\n Zweiter Absatz."
    two = translation_pairs(_desc("m1", "First paragraph.\n\nSecond paragraph."), text, "de", True)
    assert [(r["input"], r["target"]) for r in two] == [
        ("A tool", "Ein Werkzeug"),
        ("First paragraph.", "Erster Absatz über das Werkzeug."),
        ("Second paragraph.", "Zweiter Absatz."),
    ]
    assert {r["lang"] for r in two} == {"de"} and {r["group"] for r in two} == {"src"}
    three = translation_pairs(_desc("m1", "One.\n\nTwo.\n\nThree."), text, "de", True)
    assert len(three) == 1  # synopsis only
    assert len(translation_pairs(_desc("m1", "A.\n\nB."), text, "de", paragraphs=False)) == 1


def test_build_translation_joins_on_md5_in_each_description_split(tmp_path, monkeypatch):
    (tmp_path / "x_Translation-de").write_text(TRANSLATION_DE)
    files = apt_sources.IndexFiles([], [tmp_path / "x_Translation-en", tmp_path / "x_Translation-de"])
    asked: dict[str, object] = {}
    monkeypatch.setattr(
        apt_sources, "fetch_index_files", lambda cache, languages, refresh: asked.update(languages=languages) or files
    )
    monkeypatch.setattr(apt_sources, "open_index", functools.partial(open, encoding="utf-8"))
    by_split = {
        "train": [_desc("m2", "Only one paragraph.", "b")],
        "val": [_desc("m1", "P1.\n\nP2.", "a")],
        "test": [_desc("m9", "Untranslated.")],
    }
    cache = AptCache(str(tmp_path / "cache"))  # the test's own folder, not the working directory
    task, used = build_translation_task(TranslationConfig(languages=["de"]), by_split, "s", cache)
    assert asked["languages"] == ("en", "de")  # never fewer lists than the corpus needs
    assert used == [tmp_path / "x_Translation-de"]
    assert [r["target"] for r in task.splits["train"]] == ["Eine Bibliothek", "Nur ein Absatz."]
    assert len(task.splits["val"]) == 3 and task.splits["test"] == []
    assert task.notes["descriptions_with_translation"] == {"de": 2}
    with pytest.raises(PipelineError, match="Translation-fr"):
        build_translation_task(TranslationConfig(languages=["fr"]), by_split, "s", cache)


def test_read_translations_keeps_wanted_md5s_and_only_its_language_field(tmp_path):
    text = (
        "Package: a\nDescription-md5: m1\nDescription-de: Titel\n Zeile eins\n .\n Zeile zwei\n"
        "X-Other: value\n continued other field\n\nPackage: b\nDescription-md5: m2\n"
        "Description-de: Anderes\n Text\n"
    )
    (tmp_path / "t").write_text(text)
    with open(tmp_path / "t") as fh:
        table = read_translations([fh], "de", wanted={"m1"})
    assert table == {"m1": "Titel\n Zeile eins\n .\n Zeile zwei"}
