"""tokenize -> pretrain -> finetune -> evaluate on a synthetic ingest output, tiny preset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm_pipeline.data.tokenization.tokenizer import load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.model_files import load_pretrained
from llm_pipeline.stages import pretrain, tokenize
from llm_pipeline.tracking.runs import NullTracker

NO_TRACKING = NullTracker()
TINY_TRAINER = {
    "max_steps": 30,
    "val_check_interval": 15,
    "limit_val_batches": 2,
    "enable_progress_bar": False,
    "accelerator": "cpu",
    "devices": 1,
    "log_every_n_steps": 5,
}


def bpe_config(ingest_dir, out, vocab_size=300):
    return tokenize.TokenizeConfig(
        input_dir=str(ingest_dir),
        output_dir=str(out),
        progress=False,
        tokenizers={"bpe": {"kind": "bpe", "vocab_size": vocab_size}},
    )


def shard_dir(cfg) -> str:
    return f"{cfg.output_dir}/bpe"


@pytest.fixture
def tokenized(fake_ingest_dir, tmp_path):
    cfg = bpe_config(fake_ingest_dir, tmp_path / "tok")
    result = tokenize.run(cfg, NO_TRACKING)
    return cfg, result


def test_tokenize_writes_shards_that_decode_back_to_the_corpus(tokenized, fake_ingest_dir):
    cfg, result = tokenized
    manifest = json.loads((tmp := Path(shard_dir(cfg)) / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["vocab_size"] <= 300
    tokenizer = load_tokenizer(tmp.parent / "tokenizer.json")
    val = np.fromfile(tmp.parent / "val.bin", dtype=np.uint16)
    assert len(val) == manifest["counts"]["tokens"]["val"] == result.metrics["bpe/tokens/val"]
    # split the shard on EOT: each piece decodes to exactly one val document, in order
    eot = manifest["eot_id"]
    cuts = np.flatnonzero(val == eot)
    first = tokenizer.decode(val[: cuts[0]].tolist())
    docs = pd.read_parquet(fake_ingest_dir / "corpus" / "val.parquet")["text"].tolist()
    assert first == docs[0]
    assert len(cuts) == len(docs)


def test_tokenize_refuses_a_missing_split(fake_ingest_dir, tmp_path):
    (fake_ingest_dir / "corpus" / "val.parquet").unlink()
    cfg = bpe_config(fake_ingest_dir, tmp_path / "tok")
    with pytest.raises(PipelineError, match="val.parquet: missing val split"):
        tokenize.run(cfg, NO_TRACKING)
    assert not (tmp_path / "tok").exists()  # nothing half-written


def pretrain_config(tok_cfg, tmp_path, family="gpt", tokenizer="bpe", **family_cfg):
    block = {
        "tokenizer": tokenizer,
        "model": {"preset": "tiny", "overrides": {"block_size": 32}},
        "data": {"batch_size": 16},
        "optim": {"lr": 1e-2, "warmup_steps": 10},
        "trainer": TINY_TRAINER | {"max_steps": 100, "val_check_interval": 50},
    } | family_cfg
    return pretrain.PretrainConfig(
        item=family,
        families={family: block},
        tokenize_root=tok_cfg.output_dir,
        output_dir=str(tmp_path / "pretrain"),
        plots_dir=str(tmp_path / "plots"),
    )


def test_pretrain_gpt_through_the_stage(tokenized, tmp_path):
    tok_cfg, _ = tokenized
    pre = pretrain.run(pretrain_config(tok_cfg, tmp_path), NO_TRACKING)
    assert pre.metrics["steps"] == 100
    assert pre.metrics["val/ppl"] < 300  # below a uniform guess over the vocabulary
    folder = tmp_path / "pretrain" / "gpt"
    model, meta = load_pretrained(folder, "gpt")
    assert meta["config"]["block_size"] == 32 and model.config.n_layer == 2 and meta["family"] == "gpt"
    # self-contained: the tokenizer travels with the model
    assert (folder / "tokenizer.json").read_bytes() == (Path(shard_dir(tok_cfg)) / "tokenizer.json").read_bytes()
    loss_rows = (tmp_path / "plots" / "pretrain-gpt_loss.tsv").read_text().splitlines()
    assert loss_rows[0] == "step\ttrain_loss" and len(loss_rows) == 101
    assert not [p.name for p in (tmp_path / "pretrain").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_pretrain_refuses_shards_made_by_another_tokenizer(tokenized, fake_ingest_dir, tmp_path):
    tok_cfg, _ = tokenized
    other = bpe_config(fake_ingest_dir, tmp_path / "tok2", vocab_size=280)
    tokenize.run(other, NO_TRACKING)
    shutil.copy(f"{shard_dir(other)}/tokenizer.json", f"{shard_dir(tok_cfg)}/tokenizer.json")
    with pytest.raises(
        PipelineError, match=r"token shards in .*tok/bpe was made with tokenizer sha256 .* but .*tok/bpe/tokenizer.json"
    ):
        pretrain.run(pretrain_config(tok_cfg, tmp_path), NO_TRACKING)


def test_pretrain_needs_a_configured_family(tokenized, tmp_path):
    tok_cfg, _ = tokenized
    cfg = pretrain_config(tok_cfg, tmp_path)
    with pytest.raises(PipelineError, match=r"pretrain: no item given; name one of families \(gpt\)"):
        pretrain.run(cfg.model_copy(update={"item": None}), NO_TRACKING)
    with pytest.raises(PipelineError, match="item 't5' has no block under 'families'"):
        pretrain.run(cfg.model_copy(update={"item": "t5"}), NO_TRACKING)
    mixed = pretrain_config(tok_cfg, tmp_path, data={"objective_mix": {"prefix_lm": 1.0}})
    with pytest.raises(PipelineError, match=r"families\.gpt\.data\.objective_mix: gpt pretrains with causal_lm"):
        pretrain.run(mixed, NO_TRACKING)


@pytest.mark.parametrize(
    ("family", "kind", "expected"),
    [
        ("bert", "wordpiece", {"val/mlm_acc", "val/nsp_acc", "val/loss"}),
        ("t5", "unigram", {"val/loss", "val/ppl"}),
    ],
)
def test_pretrain_bert_and_t5_through_the_stage(fake_ingest_dir, tmp_path, family, kind, expected):
    tok_cfg = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        progress=False,
        tokenizers={kind: {"kind": kind, "vocab_size": 400}},
    )
    tokenize.run(tok_cfg, NO_TRACKING)
    cfg = pretrain_config(
        tok_cfg,
        tmp_path,
        family=family,
        tokenizer=kind,
        model={"preset": "tiny", "overrides": {}},
        # t5 trains on all three of its objectives (prefix_lm and denoise beside span corruption)
        data={"batch_size": 8, "seq_len": 32}
        | ({"objective_mix": {"span_corruption": 1, "prefix_lm": 1, "denoise": 1}} if family == "t5" else {}),
        trainer=TINY_TRAINER | {"max_steps": 6, "val_check_interval": 3},
    ).model_copy(update={"tasks_dir": str(fake_ingest_dir / "tasks")})
    result = pretrain.run(cfg, NO_TRACKING)
    assert expected <= set(result.metrics) and result.metrics["steps"] == 6
    model, meta = load_pretrained(tmp_path / "pretrain" / family)
    assert meta["family"] == family and type(model).__name__ == {"bert": "BERT", "t5": "T5"}[family]
