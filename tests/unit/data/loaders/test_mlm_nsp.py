"""BERT MLM + NSP batches from ingest's nsp pairs."""

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from llm_pipeline.data.loaders.masking import IGNORE_INDEX, MaskingConfig
from llm_pipeline.data.loaders.mlm_nsp import BertSpecialIds, NSPDataset, build_pair, collate_nsp, load_nsp_pairs
from llm_pipeline.errors import PipelineError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def wordpiece() -> Tokenizer:
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


SPECIAL = BertSpecialIds.from_tokenizer(wordpiece())


def test_pair_layout_and_truncation_keeps_both_segments():
    ids, types = build_pair([10, 11, 12], [20, 21], SPECIAL, max_len=16)
    assert ids == [SPECIAL.cls, 10, 11, 12, SPECIAL.sep, 20, 21, SPECIAL.sep]
    assert types == [0, 0, 0, 0, 0, 1, 1, 1]
    ids, types = build_pair(list(range(100, 120)), [20, 21, 22], SPECIAL, max_len=10)
    # 7 slots for content: the longer segment gives up tokens from its end until both fit
    assert ids == [SPECIAL.cls, 100, 101, 102, 103, SPECIAL.sep, 20, 21, 22, SPECIAL.sep]
    assert types == [0] * 6 + [1] * 4
    ids, _ = build_pair(list(range(100, 120)), list(range(200, 220)), SPECIAL, max_len=11)
    assert ids == [SPECIAL.cls, 100, 101, 102, 103, SPECIAL.sep, 200, 201, 202, 203, SPECIAL.sep]


def test_batches_pad_mask_and_label(tmp_path):
    (tmp_path / "nsp").mkdir()
    pd.DataFrame(
        {
            "text_a": ["the cat sat", "a dog ran far away", "the mat"],
            "text_b": ["on a mat", "the cat", "dog ran"],
            "is_next": [1, 0, 1],
            "group": ["d1", "d2", "d3"],
        }
    ).to_parquet(tmp_path / "nsp" / "val.parquet")
    pairs, is_next = load_nsp_pairs(tmp_path, "val", wordpiece())
    masking = MaskingConfig(SPECIAL.mask, 15, (0, 1, 2, 3, 4), mlm_probability=0.5)
    dataset = NSPDataset(pairs, is_next, SPECIAL, masking, max_len=16, seed=3)
    batch = collate_nsp([dataset[i] for i in range(3)], pad_id=SPECIAL.pad)
    assert batch["input_ids"].shape == batch["mlm_labels"].shape == (3, 10)  # longest: 5 + 2 words + 3 specials
    assert batch["attention_mask"].sum(1).tolist() == [9, 10, 7]
    assert batch["nsp_label"].tolist() == [0, 1, 0]  # BERT's classes: 0 IsNext, 1 NotNext
    padding = batch["attention_mask"] == 0
    assert (batch["input_ids"][padding] == SPECIAL.pad).all() and (batch["mlm_labels"][padding] == IGNORE_INDEX).all()
    assert batch["token_type_ids"][0].tolist() == [0] * 5 + [1] * 4 + [0]  # [CLS] a a a [SEP] b b b [SEP] [PAD]
    # a fixed seed masks validation items the same way every epoch
    assert torch.equal(dataset[1]["input_ids"], dataset[1]["input_ids"])
    assert (batch["mlm_labels"] != IGNORE_INDEX).any()


def test_bad_is_next_and_missing_tokens_are_clear_errors(tmp_path):
    (tmp_path / "nsp").mkdir()
    pd.DataFrame({"text_a": ["a"], "text_b": ["b"], "is_next": [2], "group": ["g"]}).to_parquet(
        tmp_path / "nsp" / "train.parquet"
    )
    with pytest.raises(PipelineError, match="row 0: is_next must be 0 or 1"):
        load_nsp_pairs(tmp_path, "train", wordpiece())
    with pytest.raises(PipelineError, match=r"\[MASK\]"):
        BertSpecialIds.from_tokenizer(Tokenizer(models.WordPiece({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]")))
