"""The fetch stage's snapshot, and ingest reading from it (a fake archive: no network)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from llm_pipeline.config import build_config
from llm_pipeline.data.sources import apt_sources
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file
from llm_pipeline.stages import fetch, ingest

APT = "deb.debian.org_debian_dists_bookworm_main_"  # apt's names: the snapshot selects by them


def fake_archive(root: Path, monkeypatch, *, unreachable: bool = False) -> list[tuple]:
    """Index files for en/de and a wordnet .deb served by stand-ins of apt_sources' fetchers;
    returns the list of calls they got. unreachable: a refresh fails like a dead network."""
    root.mkdir(parents=True, exist_ok=True)
    packages, english, german = [], [], []
    for i in range(40):
        src, section = f"src{i // 2}", ("libs", "python", "doc")[i % 3]
        packages.append(f"Package: pkg{i}\nSource: {src} (1.0)\nSection: {section}\nDescription-md5: m{i}\n")
        english.append(f"Package: pkg{i}\nDescription-md5: m{i}\nDescription-en: synopsis {i}\n"
                       f" Package {i} from {src} is described here at some length. And more.\n")  # fmt: skip
        german.append(f"Package: pkg{i}\nDescription-md5: m{i}\nDescription-de: Kurz {i}\n"
                      f" Paket {i} aus {src} wird hier beschrieben.\n")  # fmt: skip
    (root / f"{APT}binary-amd64_Packages").write_text("\n".join(packages))
    (root / f"{APT}i18n_Translation-en").write_text("\n".join(english))
    (root / f"{APT}i18n_Translation-de").write_text("\n".join(german))
    (root / "wordnet-base_3.0_all.deb").write_bytes(b"a deb")
    wordnet = root / "wordnet"
    (wordnet / "usr/share/wordnet").mkdir(parents=True, exist_ok=True)
    (wordnet / "usr/share/wordnet/data.noun").write_text(
        "".join(f'{i:08d} 03 n 01 word{i} 0 000 | meaning number {i}; "an example"\n' for i in range(60))
    )
    calls: list[tuple] = []

    def index_files(cache, languages=("en",), refresh=False):
        calls.append(("index", tuple(languages), refresh))
        if unreachable and refresh:
            raise PipelineError("`apt-get update` failed (exit 100): Temporary failure resolving 'deb.debian.org'")
        return apt_sources.IndexFiles(
            [root / f"{APT}binary-amd64_Packages"], [root / f"{APT}i18n_Translation-{lang}" for lang in languages]
        )

    def deb(package, cache, refresh=False):
        calls.append(("deb", package, refresh))
        return root / "wordnet-base_3.0_all.deb"

    monkeypatch.setattr(apt_sources, "fetch_index_files", index_files)
    monkeypatch.setattr(apt_sources, "fetch_deb", deb)
    monkeypatch.setattr(apt_sources, "extract_deb", lambda *a, **k: wordnet)
    monkeypatch.setattr(apt_sources, "open_index", functools.partial(open, encoding="utf-8"))
    return calls


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """Params for fetch + ingest: Debian descriptions, a local JSONL source, a local task."""
    monkeypatch.chdir(tmp_path)
    Path("docs").mkdir()
    Path("docs/a.jsonl").write_text(
        "\n".join(json.dumps({"text": f"Local document {i} with enough characters to be kept."}) for i in range(30))
    )
    Path("qa.jsonl").write_text("\n".join(json.dumps({"input": f"q{i}", "target": f"a{i}"}) for i in range(30)))
    params = {
        "output_dir": "data/ingest",
        "snapshot_dir": "data/snapshot",
        "cache_dir": str(tmp_path / "cache"),
        "progress": False,
        "sources": [{"kind": "debian_descriptions"}, {"kind": "jsonl", "path": "docs"}],
        "cleaning": {"min_chars": 20, "max_chars": 1000},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": "t"},
        "tasks": {
            "classification": {"top_n_sections": 3},
            "translation": {"languages": ["de"]},
            "qa": {"parts_of_speech": ["noun"]},
            "nsp": {"min_segment_chars": 5},
            "generation": {"prompt_words": 5, "min_continuation_words": 2},
            "local": [{"name": "mine", "kind": "seq2seq", "path": "qa.jsonl", "format": "jsonl"}],
        },
    }
    Path("ingest.yaml").write_text(json.dumps(params))  # JSON is YAML
    return tmp_path


def run_fetch(**overrides) -> dict:
    cfg = build_config(fetch.FetchConfig, {"ingest_params": "ingest.yaml", "cache_dir": "cache", **overrides})
    return fetch.run(cfg).report


def run_ingest() -> dict:
    cfg = build_config(ingest.IngestConfig, json.loads(Path("ingest.yaml").read_text()))
    return ingest.run(cfg).report


def test_the_snapshot_holds_every_upstream_and_local_file_and_is_identical_when_nothing_changed(project, monkeypatch):
    calls = fake_archive(project / "archive", monkeypatch)
    first = run_fetch()
    manifest = Path("data/snapshot/manifest.json").read_bytes()
    # one refresh of the index files for every language at once (fewer would delete the others)
    assert calls[0] == ("index", ("en", "de"), True)
    assert ("deb", "wordnet-base", True) in calls
    by_name = {e.get("source") or e["name"]: e for e in first["files"]}
    assert set(by_name) == {
        f"{APT}binary-amd64_Packages",
        f"{APT}i18n_Translation-en",
        f"{APT}i18n_Translation-de",
        "wordnet-base_3.0_all.deb",
        "docs/a.jsonl",
        "qa.jsonl",
    }
    for entry in first["files"]:  # upstream copied under their sha256; local files hashed in place
        path = Path("data/snapshot") / entry["path"] if "path" in entry else Path(entry["source"])
        assert sha256_file(path) == entry["sha256"]
        if "path" in entry:
            assert entry["path"] == f"files/{entry['sha256']}/{entry['name']}"

    again = run_fetch()
    assert Path("data/snapshot/manifest.json").read_bytes() == manifest  # DVC sees no change
    assert again["snapshot_id"] == first["snapshot_id"]

    Path("qa.jsonl").write_text(Path("qa.jsonl").read_text() + "\n" + json.dumps({"input": "q", "target": "a"}))
    changed = run_fetch()
    assert changed["snapshot_id"] != first["snapshot_id"]
    differ = [a for a, b in zip(first["files"], changed["files"]) if a != b]
    assert [e["source"] for e in differ] == ["qa.jsonl"]


def test_ingest_reads_the_snapshot_only_and_refuses_a_local_file_changed_since(project, monkeypatch):
    fake_archive(project / "archive", monkeypatch)
    run_fetch()

    def no_network(*args, **kwargs):
        raise AssertionError("ingest fetched from the archive instead of reading the snapshot")

    monkeypatch.setattr(apt_sources, "fetch_index_files", no_network)
    monkeypatch.setattr(apt_sources, "fetch_deb", no_network)
    report = run_ingest()
    inputs = {Path(i["path"]).name: i for i in json.loads(Path("data/ingest/manifest.json").read_text())["inputs"]}
    assert inputs[f"{APT}i18n_Translation-de"]["path"].startswith("data/snapshot/files/")
    assert {"classification", "translation", "qa", "mine"} <= set(report["counts"]["tasks"])

    Path("docs/a.jsonl").write_text(Path("docs/a.jsonl").read_text().replace("Local", "Edited"))
    with pytest.raises(PipelineError, match=r"docs/a.jsonl: changed after the fetch stage hashed it"):
        run_ingest()


def test_a_source_the_fetch_stage_never_saw_is_refused(project, monkeypatch):
    fake_archive(project / "archive", monkeypatch)
    run_fetch()
    Path("docs/b.jsonl").write_text(json.dumps({"text": "A new file added after the fetch stage ran, long enough."}))
    with pytest.raises(PipelineError, match=r"docs/b.jsonl: read by ingest but not in data/snapshot/manifest.json"):
        run_ingest()


def test_ingest_without_a_snapshot_names_the_stage_to_run(project, monkeypatch):
    fake_archive(project / "archive", monkeypatch)
    with pytest.raises(PipelineError, match=r"data/snapshot/manifest.json: no snapshot here; run the fetch stage"):
        run_ingest()


def test_an_unreachable_archive_uses_the_cache_or_fails_as_configured(project, monkeypatch):
    calls = fake_archive(project / "archive", monkeypatch, unreachable=True)
    report = run_fetch()
    assert "Temporary failure resolving" in report["stale"]
    assert ("index", ("en", "de"), False) in calls  # then read what the cache holds
    assert Path("data/snapshot/manifest.json").is_file()
    with pytest.raises(PipelineError, match="Temporary failure resolving"):
        run_fetch(on_fetch_error="fail")
