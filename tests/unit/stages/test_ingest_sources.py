"""ingest with users' sources: weights, on_error, quarantine contents, atomic outputs."""

import gzip
import json

import pyarrow.parquet as pq
import pytest

from llm_pipeline.config import build_config
from llm_pipeline.errors import PipelineError
from llm_pipeline.stages.ingest import IngestConfig, run

NO_TASKS = {t: {"enabled": False} for t in ("qa", "nsp", "generation")}


def _config(tmp_path, sources, **extra):
    data = {
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "progress": False,
        "sources": sources,
        "cleaning": {"min_chars": 20, "max_chars": 1000},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": "t"},
        "tasks": NO_TASKS,
        **extra,
    }
    return build_config(IngestConfig, data)


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
    cfg = _config(tmp_path, _write_sources(tmp_path), on_error="quarantine")
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
    run(_config(tmp_path, sources, on_error="quarantine"))
    before = (tmp_path / "out" / "manifest.json").read_text()
    with pytest.raises(PipelineError, match=r"a\.jsonl\.gz:101: not valid JSON"):
        run(_config(tmp_path, sources))  # on_error defaults to fail
    assert (tmp_path / "out" / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_per_source_on_error_overrides_the_global_one(tmp_path):
    sources = _write_sources(tmp_path)
    sources[0]["on_error"] = "quarantine"
    run(_config(tmp_path, sources, on_error="fail"))
    assert pq.read_table(tmp_path / "out" / "quarantine.parquet").num_rows == 1


def test_config_rejects_unit_on_non_txt_and_small_record_limit(tmp_path):
    with pytest.raises(PipelineError, match="unit: paragraph applies to kind: txt"):
        _config(tmp_path, [{"kind": "jsonl", "path": "x", "unit": "paragraph"}])
    with pytest.raises(PipelineError, match="max_record_bytes must be >= max_chars"):
        build_config(IngestConfig, {"cleaning": {"max_chars": 100, "max_record_bytes": 10}})


def test_config_rejects_two_sources_with_one_name(tmp_path):
    with pytest.raises(PipelineError, match="two sources are named"):
        _config(tmp_path, [{"kind": "txt", "path": "a", "name": "x"}, {"kind": "jsonl", "path": "b", "name": "x"}])
