"""ingest with users' sources: weights, on_error, quarantine contents, atomic outputs."""

import functools
import gzip
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from llm_pipeline.config import build_config
from llm_pipeline.data.sources import apt_sources
from llm_pipeline.errors import PipelineError
from llm_pipeline.stages.ingest import IngestConfig, run

SPLITS = ("train", "val", "test")


def _config(tmp_path, sources, **extra):
    data = {
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "progress": False,
        "sources": sources,
        "cleaning": {"min_chars": 20, "max_chars": 1000},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": "t"},
        **extra,
    }
    return build_config(IngestConfig, data)


def _read(path):
    return pq.read_table(path).to_pylist()


def test_ingest_local_files_end_to_end(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = [{"text": f"Document number {i} has enough characters to be kept."} for i in range(40)]
    rows += [{"text": "too short"}, {"text": rows[0]["text"]}]  # two drops
    (docs / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (docs / "b.txt").write_text("A plain text file with a sentence long enough to keep.")
    cfg = _config(
        tmp_path,
        [{"kind": "jsonl", "path": str(docs / "*.jsonl")}, {"kind": "txt", "path": str(docs / "*.txt")}],
        tasks={t: {"enabled": False} for t in ("qa", "nsp", "generation")},
    )
    result = run(cfg)

    out = tmp_path / "out"
    corpus = {s: _read(out / "corpus" / f"{s}.parquet") for s in SPLITS}
    assert sum(len(r) for r in corpus.values()) == 41
    assert all(corpus[s] for s in SPLITS)
    assert set(corpus["train"][0]) == {"doc_id", "source", "text"}
    ids = [r["doc_id"] for rows in corpus.values() for r in rows]
    assert len(set(ids)) == len(ids)
    quarantine = _read(out / "quarantine.parquet")
    assert sorted(q["reason"] for q in quarantine) == ["duplicate", "too_short"]
    assert not (out / "tasks").exists()  # no Debian source, no Debian tasks
    assert set(json.loads((out / "manifest.json").read_text())["counts"]["tasks_skipped"]) == {
        "classification",
        "summarization",
        "translation",
    }

    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["path"] for i in manifest["inputs"]] == [str(docs / "a.jsonl"), str(docs / "b.txt")]
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert manifest["counts"]["dropped_by_reason"] == {"too_short": 1, "duplicate": 1}
    assert manifest["counts"]["per_source"][f"jsonl:{docs / '*.jsonl'}"]["kept"] == 40
    assert result.metrics["corpus/train_documents"] == len(corpus["train"])


def _fake_debian(tmp_path, monkeypatch):
    packages, translation, german = [], [], []
    for i in range(120):
        section = ["libs", "python", "doc", "games"][i % 4] if i < 119 else "rare"
        src = f"src{i // 2}"  # two binaries per source package
        packages.append(f"Package: pkg{i}\nSource: {src} (1.0)\nSection: {section}\nDescription-md5: m{i}\n")
        translation.append(
            f"Package: pkg{i}\nDescription-md5: m{i}\nDescription-en: synopsis {i}\n"
            f" Package {i} from {src} is described here at some length. And more.\n"
        )
        german.append(
            f"Package: pkg{i}\nDescription-md5: m{i}\nDescription-de: Kurz {i}\n"
            f" Paket {i} aus {src} wird hier beschrieben.\n"
        )
    (tmp_path / "Packages").write_text("\n".join(packages))
    (tmp_path / "Translation-en").write_text("\n".join(translation))
    (tmp_path / "Translation-de").write_text("\n".join(german))
    files = apt_sources.IndexFiles([tmp_path / "Packages"], [tmp_path / "Translation-en", tmp_path / "Translation-de"])
    monkeypatch.setattr(apt_sources, "fetch_index_files", lambda *a, **k: files)
    monkeypatch.setattr(apt_sources, "open_index", functools.partial(open, encoding="utf-8"))


def _fake_wordnet(tmp_path, monkeypatch):
    root = tmp_path / "wordnet"
    (root / "usr/share/wordnet").mkdir(parents=True)
    (root / "usr/share/wordnet/data.noun").write_text(
        "".join(f'{i:08d} 03 n 01 word{i} 0 000 | meaning number {i}; "an example"\n' for i in range(60))
    )
    (tmp_path / "wordnet.deb").write_bytes(b"deb")
    monkeypatch.setattr(apt_sources, "fetch_deb", lambda *a, **k: tmp_path / "wordnet.deb")
    monkeypatch.setattr(apt_sources, "extract_deb", lambda *a, **k: root)


def test_ingest_debian_tasks_without_leakage(tmp_path, monkeypatch):
    _fake_debian(tmp_path, monkeypatch)
    _fake_wordnet(tmp_path, monkeypatch)
    cfg = _config(
        tmp_path,
        [{"kind": "debian_descriptions", "max_records": None}],
        tasks={
            "classification": {"top_n_sections": 3},
            "translation": {"languages": ["de"]},
            "qa": {"parts_of_speech": ["noun"]},
            "nsp": {"min_segment_chars": 5},
            "generation": {"prompt_words": 5, "min_continuation_words": 2},
        },
    )
    result = run(cfg)

    out = tmp_path / "out"
    tasks = {s: _read(out / "tasks" / "classification" / f"{s}.parquet") for s in SPLITS}
    assert {r["label"] for rows in tasks.values() for r in rows} == {"libs", "python", "doc"}
    groups = {s: {r["group"] for r in rows} for s, rows in tasks.items()}
    assert not groups["train"] & (groups["val"] | groups["test"])
    # classification val/test texts never reach the pretraining (train) corpus
    train_text = {r["text"] for r in _read(out / "corpus" / "train.parquet")}
    assert not train_text & {r["text"] for s in ("val", "test") for r in tasks[s]}
    manifest = json.loads((out / "manifest.json").read_text())
    cards = manifest["counts"]["tasks"]
    assert set(cards) == {"classification", "summarization", "translation", "qa", "nsp", "generation"}
    for name, card in cards.items():
        assert card["sizes"] == {s: len(_read(out / "tasks" / name / f"{s}.parquet")) for s in SPLITS}
        assert sum(card["sizes"].values()) > 0 and card["source"]
    assert cards["classification"]["label_distribution"]["train"]
    assert _read(out / "tasks" / "translation" / "train.parquet")[0]["lang"] == "de"
    assert manifest["counts"]["task_leakage"]["total"] == 0
    assert manifest["counts"]["task_leakage"]["per_task"]["summarization"]["test"] == {"text": 0, "group": 0}
    assert str(tmp_path / "Translation-de") in [i["path"] for i in manifest["inputs"]]
    assert result.metrics["classification/num_labels"] == 3
    assert result.metrics["qa/train_examples"] == cards["qa"]["sizes"]["train"]
    test_labels = Counter(r["label"] for r in _read(out / "tasks" / "classification" / "test.parquet"))
    assert result.metrics["classification/test_majority_fraction"] == pytest.approx(
        max(test_labels.values()) / sum(test_labels.values())
    )


def test_ingest_empty_corpus_is_an_error_and_leaves_no_output(tmp_path):
    (tmp_path / "a.txt").write_text("short")
    cfg = _config(tmp_path, [{"kind": "txt", "path": str(tmp_path / "a.txt")}])
    with pytest.raises(PipelineError, match="no documents left"):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_config_rejects_unknown_kind_and_keys(tmp_path):
    with pytest.raises(PipelineError, match="sources"):
        _config(tmp_path, [{"kind": "web", "url": "x"}])
    with pytest.raises(PipelineError, match="unknown key 'cleaning.min_len'"):
        build_config(IngestConfig, {"cleaning": {"min_len": 3}})
    with pytest.raises(PipelineError, match="val_fraction"):
        build_config(IngestConfig, {"split": {"val_fraction": 0.6, "test_fraction": 0.5}})


NO_TASKS = {t: {"enabled": False} for t in ("qa", "nsp", "generation")}


def _sources_config(tmp_path, sources, **extra):
    """_config with the downstream tasks off: these tests look at the corpus only."""
    return _config(tmp_path, sources, **({"tasks": NO_TASKS} | extra))


def _lines(prefix, n):
    return [f"{prefix} line {i}: " + " ".join(f"{prefix}{i}w{k}" for k in range(8)) for i in range(n)]


def _write_sources(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in _lines("alpha", 100)).encode() + b"{broken\n")
    )
    (tmp_path / "b.csv").write_text("id,body\n" + "".join(f"{i},{t}\n" for i, t in enumerate(_lines("beta", 100))))
    return [
        {"kind": "jsonl", "path": str(tmp_path / "a.jsonl.gz"), "weight": 2.0, "name": "alpha"},
        {"kind": "csv", "path": str(tmp_path / "b.csv"), "text_field": "body", "weight": 0.5, "name": "beta"},
    ]


def test_weights_change_train_only_and_bad_records_are_quarantined(tmp_path):
    cfg = _sources_config(tmp_path, _write_sources(tmp_path), on_error="quarantine")
    run(cfg)
    out = tmp_path / "out"
    corpus = {s: pq.read_table(out / "corpus" / f"{s}.parquet").to_pylist() for s in ("train", "val", "test")}
    manifest = json.loads((out / "manifest.json").read_text())
    mixing = manifest["counts"]["mixing"]
    train_alpha = [r for r in corpus["train"] if r["source"] == "alpha"]
    assert len(train_alpha) == 2 * mixing["alpha"]["train_documents"] == mixing["alpha"]["train_effective"]
    assert 0 < mixing["beta"]["train_effective"] < mixing["beta"]["train_documents"]
    # val/test hold each document once, whatever its weight
    for split in ("val", "test"):
        ids = [r["doc_id"] for r in corpus[split]]
        assert len(ids) == len(set(ids)) == manifest["counts"]["per_split"][split]["documents"]
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert [(q["location"], q["reason"]) for q in quarantine] == [(f"{tmp_path / 'a.jsonl.gz'}:101", "malformed_json")]
    assert quarantine[0]["detail"] and set(quarantine[0]) == {"source", "location", "reason", "text", "detail"}
    assert manifest["counts"]["per_source"]["alpha"]["dropped"] == {"malformed_json": 1}
    assert manifest["counts"]["dedup"]["eval_docs_with_exact_copy_in_train"] == 0


def test_a_bad_record_fails_the_run_and_keeps_the_previous_output(tmp_path):
    sources = _write_sources(tmp_path)
    run(_sources_config(tmp_path, sources, on_error="quarantine"))
    before = (tmp_path / "out" / "manifest.json").read_text()
    with pytest.raises(PipelineError, match=r"a\.jsonl\.gz:101: not valid JSON"):
        run(_sources_config(tmp_path, sources))  # on_error defaults to fail
    assert (tmp_path / "out" / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_per_source_on_error_overrides_the_global_one(tmp_path):
    sources = _write_sources(tmp_path)
    sources[0]["on_error"] = "quarantine"
    run(_sources_config(tmp_path, sources, on_error="fail"))
    assert pq.read_table(tmp_path / "out" / "quarantine.parquet").num_rows == 1


def test_config_rejects_unit_on_non_txt_and_small_record_limit(tmp_path):
    with pytest.raises(PipelineError, match="unit: paragraph applies to kind: txt"):
        _sources_config(tmp_path, [{"kind": "jsonl", "path": "x", "unit": "paragraph"}])
    with pytest.raises(PipelineError, match="max_record_bytes must be >= max_chars"):
        build_config(IngestConfig, {"cleaning": {"max_chars": 100, "max_record_bytes": 10}})


def test_config_rejects_two_sources_with_one_name(tmp_path):
    with pytest.raises(PipelineError, match="two sources are named"):
        _sources_config(
            tmp_path, [{"kind": "txt", "path": "a", "name": "x"}, {"kind": "jsonl", "path": "b", "name": "x"}]
        )
