"""Each family's setup trains a few steps through the one engine; bad setups fail before training."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from llm_pipeline.data.loaders.config import PretrainDataConfig
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FAMILIES, get_family
from llm_pipeline.stages.pretrain import FamilyConfig, ModelChoice, build_pretrain_setup
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "came", "back", "home"]
SPECIALS = {
    "bpe": {"eot": "<|endoftext|>"},
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "unigram": {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"},
}
SEPARATOR = {"bpe": "<|endoftext|>", "wordpiece": "[SEP]", "unigram": "</s>"}


def make_tokenizer_dir(path, kind, extra_ids=20, vocab_size=None):
    """A word-level stand-in for the tokenize stage's output: tokenizer.json, shards, manifest."""
    tokens = (
        list(SPECIALS[kind].values())
        + ([f"<extra_id_{i}>" for i in range(extra_ids)] if kind == "unigram" else [])
        + WORDS
    )
    tokenizer = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=tokens[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path.mkdir(parents=True)
    tokenizer.save(str(path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    first_word = len(tokens) - len(WORDS)
    for split, n in (("train", 3000), ("val", 600)):
        rng.integers(first_word, len(tokens), n).astype(np.uint16).tofile(path / f"{split}.bin")
    manifest = {
        "tokenizer_sha256": "x",
        "tokenizer_kind": kind,
        "vocab_size": vocab_size or len(tokens),
        "dtype": "uint16",
        "eot_id": tokenizer.token_to_id(SEPARATOR[kind]),
        "special_tokens": SPECIALS[kind],
        "tokens": {"train": 3000, "val": 600},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def make_nsp_tasks(path):
    rng = np.random.default_rng(1)
    sentence = lambda: " ".join(rng.choice(WORDS, rng.integers(3, 12)))
    (path / "nsp").mkdir(parents=True)
    for split in ("train", "val"):
        pd.DataFrame(
            {
                "text_a": [sentence() for _ in range(40)],
                "text_b": [sentence() for _ in range(40)],
                "is_next": rng.integers(0, 2, 40),
                "group": [f"d{i}" for i in range(40)],
            }
        ).to_parquet(path / "nsp" / f"{split}.parquet")
    return path


KIND = {name: spec.tokenizer_kind for name, spec in FAMILIES.items()}


def setup_for(family, tok_dir, preset="tiny", overrides=None, data=None, tasks_dir="data/ingest/tasks"):
    fam = FamilyConfig(
        tokenizer=tok_dir.name,
        model=ModelChoice(preset=preset, overrides=overrides or {}),
        data=data or PretrainDataConfig(),
    )
    return build_pretrain_setup(get_family(family), tok_dir, fam, tasks_dir)


VAL_KEYS = {
    "gpt": {"val/loss", "val/ppl"},
    "bert": {"val/loss", "val/mlm_loss", "val/mlm_acc", "val/nsp_loss", "val/nsp_acc", "val/mlm_ppl"},
    "t5": {"val/loss", "val/acc", "val/ppl"},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_setup_trains_through_the_engine(tmp_path, family):
    torch.manual_seed(0)
    tok_dir = make_tokenizer_dir(tmp_path / "tok", KIND[family])
    data = PretrainDataConfig(seq_len=32, batch_size=4, samples_per_epoch=40)
    setup = setup_for(family, tok_dir, data=data, tasks_dir=make_nsp_tasks(tmp_path))
    batch = next(iter(setup.train_loader))
    first = batch[0] if family == "gpt" else batch["input_ids"]
    assert first.shape[0] == 4 and first.shape[1] <= 32 and (family == "bert" or first.shape[1] == 32)
    module = TrainingModule(setup.model, setup.objective, OptimConfig(lr=3e-3, warmup_steps=1, max_steps=4))
    trainer = build_trainer(
        TrainerConfig(
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            max_steps=4,
            val_check_interval=4,
            limit_val_batches=2,
            log_every_n_steps=2,
        ),
        tmp_path,
    )
    trainer.fit(module, setup.train_loader, setup.val_loader)
    metrics = trainer.callback_metrics
    assert VAL_KEYS[family] <= set(metrics) and all(torch.isfinite(metrics[k]) for k in VAL_KEYS[family])
    assert metrics["train/tokens_per_sec"] > 0
    assert "train/mfu" not in metrics  # CPU: no peak to compare against


def test_t5_inputs_follow_the_t5_length_recipe(tmp_path):
    setup = setup_for(
        "t5", make_tokenizer_dir(tmp_path / "tok", "unigram"), data=PretrainDataConfig(seq_len=32, batch_size=2)
    )
    batch = next(iter(setup.val_loader))
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"][:, -1].tolist() == [1, 1]  # </s>
    assert batch["decoder_input_ids"][:, 0].tolist() == [0, 0]  # <pad> starts the decoder, as in T5
    assert setup.model.config.pad_id == 0


def test_bad_setups_fail_before_training(tmp_path):
    gpt_dir = make_tokenizer_dir(tmp_path / "bpe", "bpe")
    data = PretrainDataConfig()
    with pytest.raises(PipelineError, match="tokenizer_kind is 'bpe'.*'wordpiece'"):
        setup_for("bert", gpt_dir, data=data)
    with pytest.raises(PipelineError, match="vocab_size"):
        setup_for("gpt", gpt_dir, overrides={"vocab_size": 50257}, data=data)
    with pytest.raises(PipelineError, match="data.seq_len 65 exceeds"):
        setup_for("gpt", gpt_dir, data=PretrainDataConfig(seq_len=65))
    with pytest.raises(PipelineError, match="preset 'huge'"):
        setup_for("gpt", gpt_dir, preset="huge", data=data)
    with pytest.raises(PipelineError, match="no sentinel tokens"):
        setup_for("t5", make_tokenizer_dir(tmp_path / "u0", "unigram", extra_ids=0), data=data)
    with pytest.raises(PipelineError, match="7 noise spans"):
        setup_for(
            "t5", make_tokenizer_dir(tmp_path / "u3", "unigram", extra_ids=3), data=PretrainDataConfig(seq_len=128)
        )
    with pytest.raises(PipelineError, match="unknown model family"):
        get_family("llama")
