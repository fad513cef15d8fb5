"""The tokenize stage: one folder per tokenizer, separators per kind, round-trip checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm_pipeline.config import load_config
from llm_pipeline.data.tokenization.tokenizer import load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file
from llm_pipeline.stages import tokenize
from llm_pipeline.tracking.runs import NullTracker

NO_TRACKING = NullTracker()
TINY = {
    "bpe": {"kind": "bpe", "vocab_size": 300},
    "wordpiece": {"kind": "wordpiece", "vocab_size": 200},
    "unigram": {"kind": "unigram", "vocab_size": 150, "extra_ids": 4},
}
SEPARATORS = {"bpe": "<|endoftext|>", "wordpiece": "[SEP]", "unigram": "</s>"}


@pytest.fixture
def awkward_ingest_dir(fake_ingest_dir):
    """The synthetic corpus with unicode, newlines and space runs added to the test split."""
    path = fake_ingest_dir / "corpus" / "test.parquet"
    df = pd.read_parquet(path)
    extra = ["Grüße — ça va?\n\n  日本語  👩‍💻\t", "  spaces   everywhere ", "tab\there <|endoftext|> too"]
    pd.concat([df, pd.DataFrame({"doc_id": ["x1", "x2", "x3"], "source": "synthetic", "text": extra})]).to_parquet(path)
    return fake_ingest_dir


def test_every_kind_gets_a_folder_with_its_separator_manifest_and_zero_bpe_failures(awkward_ingest_dir, tmp_path):
    cfg = tokenize.TokenizeConfig(
        input_dir=str(awkward_ingest_dir), output_dir=str(tmp_path / "tok"), tokenizers=TINY, progress=False
    )
    result = tokenize.run(cfg, NO_TRACKING)
    test_docs = len(pd.read_parquet(awkward_ingest_dir / "corpus" / "test.parquet"))
    for name, sep_token in SEPARATORS.items():
        folder = tmp_path / "tok" / name
        manifest = json.loads((folder / "manifest.json").read_text())
        tok = load_tokenizer(folder / "tokenizer.json")
        assert manifest["tokenizer_sha256"] == sha256_file(folder / "tokenizer.json")
        assert manifest["tokenizer_kind"] == name and manifest["dtype"] == "uint16"
        assert manifest["eot_id"] == tok.token_to_id(sep_token)
        assert sep_token in manifest["special_tokens"].values()
        test = np.fromfile(folder / "test.bin", dtype=np.uint16)
        assert len(test) == manifest["tokens"]["test"] == result.metrics[f"{name}/tokens/test"]
        assert int((test == manifest["eot_id"]).sum()) == test_docs  # one separator per document
    assert result.metrics["bpe/test/roundtrip_failures"] == 0
    assert result.metrics["wordpiece/test/roundtrip_failures"] > 0  # lowercases: lossy, and counted


def test_only_builds_one_tokenizer_and_set_overrides_reach_it(fake_ingest_dir, tmp_path):
    params = tmp_path / "tokenize.yaml"
    params.write_text(
        json.dumps(
            {
                "input_dir": str(fake_ingest_dir),
                "output_dir": str(tmp_path / "tok"),
                "tokenizers": TINY,
                "progress": False,
            }
        )
    )
    cfg = load_config(tokenize.TokenizeConfig, params, ["item=unigram", "tokenizers.unigram.vocab_size=120"])
    result = tokenize.run(cfg, NO_TRACKING)
    assert [p.name for p in (tmp_path / "tok").iterdir()] == ["unigram"]
    assert set(result.metrics) == {
        f"unigram/{k}"
        for k in (
            "vocab_size",
            "tokens/train",
            "tokens/val",
            "tokens/test",
            "val/chars_per_token",
            "test/roundtrip_failures",
        )
    }
    assert result.metrics["unigram/vocab_size"] <= 120


def test_tokenizer_is_trained_on_the_train_split_only(fake_ingest_dir, tmp_path):
    path = fake_ingest_dir / "corpus" / "val.parquet"
    df = pd.read_parquet(path)
    df["text"] = "zyzzyva " * 50  # only in val: frequent enough to merge if val were used
    df.to_parquet(path)
    cfg = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        tokenizers={"bpe": TINY["bpe"]},
        progress=False,
    )
    tokenize.run(cfg, NO_TRACKING)
    vocab = load_tokenizer(Path(cfg.output_dir) / "bpe" / "tokenizer.json").get_vocab()
    assert not any("zy" in token for token in vocab)


def test_roundtrip_failures_counts_the_documents_that_do_not_decode_back(fake_ingest_dir, tmp_path):
    cfg = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        tokenizers={"wp": TINY["wordpiece"]},
        progress=False,
    )
    tokenize.run(cfg, NO_TRACKING)
    folder = tmp_path / "tok" / "wp"
    tok, manifest = load_tokenizer(folder / "tokenizer.json"), json.loads((folder / "manifest.json").read_text())
    shard = np.fromfile(folder / "test.bin", dtype=np.uint16)
    failures, first = tokenize.roundtrip_failures(
        tok, fake_ingest_dir / "corpus" / "test.parquet", shard, manifest["eot_id"], batch_docs=7
    )
    # every synthetic document starts with a capital letter, which the uncased WordPiece drops
    assert (failures, first) == (30, 0)


def test_a_byte_level_round_trip_failure_fails_the_stage_and_writes_nothing(fake_ingest_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tokenize, "roundtrip_failures", lambda *args: (2, 5))
    cfg = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        tokenizers={"bpe": TINY["bpe"]},
        progress=False,
    )
    with pytest.raises(PipelineError, match=r"test.parquet: record 5 \(and 1 more\) does not decode back"):
        tokenize.run(cfg, NO_TRACKING)
    assert not (tmp_path / "tok" / "bpe").exists()


def test_a_one_tokenizer_run_reports_under_its_dvc_stage_name():
    from llm_pipeline.stages.base import run_name

    assert run_name("tokenize", tokenize.TokenizeConfig(item="wordpiece")) == "tokenize-wordpiece"
    assert run_name("tokenize", tokenize.TokenizeConfig()) == "tokenize"


def test_task_texts_must_be_a_dep_of_the_tokenize_stage_in_dvc_yaml():
    from llm_pipeline.stages.tokenize import check_task_deps

    dvc_yaml = Path(__file__).resolve().parents[3] / "dvc.yaml"
    check_task_deps("data/ingest", ["translation.target"], dvc_yaml)  # the default: listed
    with pytest.raises(PipelineError, match=r"reads data/ingest/tasks/qa \(task_texts qa.target\) but does not list"):
        check_task_deps("data/ingest", ["qa.target"], dvc_yaml)
    with pytest.raises(PipelineError, match=r"\(shard_task_texts qa.target\) but does not list"):
        check_task_deps("data/ingest", ["qa.target"], dvc_yaml, option="shard_task_texts")
    check_task_deps("data/ingest", ["qa.target"], dvc_yaml.with_name("no-such-dvc.yaml"))  # a direct run: no check


def test_shard_task_texts_are_appended_to_the_train_shard_only(fake_ingest_dir, tmp_path, monkeypatch):
    from llm_pipeline.data.tokenization.shards import iter_documents

    monkeypatch.chdir(tmp_path)  # a direct run: no dvc.yaml whose deps would have to list tasks/echo

    def build(out: str, **extra) -> tuple[Path, dict, dict]:
        spec = TINY["bpe"] | extra  # byte-level: every document decodes back exactly
        cfg = tokenize.TokenizeConfig(
            input_dir=str(fake_ingest_dir),
            output_dir=out,
            tokenizers={"bpe": spec},
            encode_batch_docs=7,
            progress=False,
        )
        metrics = tokenize.run(cfg, NO_TRACKING).metrics
        return tmp_path / out / "bpe", json.loads((tmp_path / out / "bpe" / "manifest.json").read_text()), metrics

    plain, _, _ = build("plain")
    folder, manifest, metrics = build("mixed", shard_task_texts=["echo.target"])
    tok, sep = load_tokenizer(folder / "tokenizer.json"), manifest["eot_id"]
    corpus = pd.read_parquet(fake_ingest_dir / "corpus" / "train.parquet")["text"].tolist()
    targets = pd.read_parquet(fake_ingest_dir / "tasks" / "echo" / "train.parquet")["target"].tolist()
    train = np.fromfile(folder / "train.bin", dtype=np.uint16)
    assert [tok.decode(d.tolist()) for d in iter_documents(train, sep)] == corpus + targets
    for split in ("val", "test"):  # the corpus's alone, byte for byte
        assert (folder / f"{split}.bin").read_bytes() == (plain / f"{split}.bin").read_bytes()
    appended = len(train) - len(np.fromfile(plain / "train.bin", dtype=np.uint16))
    assert manifest["counts"]["appended"] == {"echo.target": {"docs": len(targets), "tokens": appended}}
    assert manifest["counts"]["docs"]["train"] == len(corpus) + len(targets)
    assert manifest["counts"]["tokens"]["train"] == len(train) == metrics["bpe/tokens/train"]
    assert metrics["bpe/train/appended_tokens/echo.target"] == appended


@pytest.mark.parametrize(
    ("ref", "message"),
    [("nope.target", r"tasks/nope/train.parquet: task split not found"), ("echo.nope", r"no 'nope' column")],
)
def test_an_unknown_shard_task_text_fails_before_training(fake_ingest_dir, tmp_path, monkeypatch, ref, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tokenize, "train_tokenizer", lambda *args, **kwargs: pytest.fail("trained"))
    cfg = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        tokenizers={"bpe": TINY["bpe"] | {"shard_task_texts": [ref]}},
        progress=False,
    )
    with pytest.raises(PipelineError, match=message) as raised:
        tokenize.run(cfg, NO_TRACKING)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "tok" / "bpe").exists()


def test_sharded_splits_hold_the_same_tokens_and_the_loaders_read_across_files(fake_ingest_dir, tmp_path):
    from llm_pipeline.data.loaders.causal_lm import TokenWindowDataset
    from llm_pipeline.data.loaders.config import TokenizedCorpus

    def run(out: str, **options) -> Path:
        cfg = tokenize.TokenizeConfig(
            input_dir=str(fake_ingest_dir),
            output_dir=str(tmp_path / out),
            tokenizers={"bpe": TINY["bpe"]},
            progress=False,
            encode_batch_docs=3,
            **options,
        )
        tokenize.run(cfg, NO_TRACKING)
        return tmp_path / out / "bpe"

    one, many = run("one"), run("many", max_shard_tokens=200)
    manifest = json.loads((many / "manifest.json").read_text())
    assert "shards" not in json.loads((one / "manifest.json").read_text())  # unsharded: as before
    corpus = TokenizedCorpus(many, manifest, load_tokenizer(many / "tokenizer.json"), fake_ingest_dir / "tasks")
    files = corpus.shards("train")
    assert len(files) > 2 and [f.name for f in files] == manifest["shards"]["train"]
    joined = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in files])
    assert joined.tobytes() == (one / "train.bin").read_bytes()
    assert sum(manifest["tokens"].values()) == sum(f.stat().st_size // 2 for f in many.glob("*.bin"))
    windows = TokenWindowDataset(files, "uint16", 16, random=False)
    whole = TokenWindowDataset(one / "train.bin", "uint16", 16, random=False)
    assert len(windows) == len(whole)
    assert all(windows[i][0].tolist() == whole[i][0].tolist() for i in range(len(whole)))
