"""BERT pretraining batches: sentence pairs from ingest's nsp task, masked for MLM, labelled for NSP.

An example is `[CLS] a [SEP] b [SEP]` with token_type_ids 0 over `[CLS] a [SEP]` and 1 over
`b [SEP]`, cut to max_len, then masked (llm_pipeline.data.loaders.masking). The NSP label follows
BERT (and HF's BertForPreTraining): 0 = IsNext (b follows a in the same document), 1 = NotNext
(b comes from another document), i.e. 1 - ingest's is_next.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus, build_loaders
from llm_pipeline.data.loaders.masking import IGNORE_INDEX, MaskingConfig, compute_mlm_masking
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.errors import PipelineError

NSP_COLUMNS = ("text_a", "text_b", "is_next")


@dataclass(frozen=True)
class BertSpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    unk: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> BertSpecialIds:
        ids = {role: tokenizer.token_to_id(f"[{role.upper()}]") for role in ("pad", "cls", "sep", "mask", "unk")}
        missing = [f"[{role.upper()}]" for role, token_id in ids.items() if token_id is None]
        if missing:
            raise PipelineError(f"the BERT tokenizer lacks the special token(s) {missing}; use the wordpiece tokenizer")
        return cls(**cast(dict[str, int], ids))  # no None left: checked above


def build_pair(
    ids_a: Sequence[int], ids_b: Sequence[int], special: BertSpecialIds, max_len: int
) -> tuple[list[int], list[int]]:
    """(input_ids, token_type_ids) of `[CLS] a [SEP] b [SEP]`, at most max_len long.

    Too long a pair loses tokens from the end of whichever segment is longer, one at a time
    (BERT's truncate_seq_pair), so both segments keep a share.
    """
    a, b = list(ids_a), list(ids_b)
    while len(a) + len(b) > max_len - 3:
        (a if len(a) >= len(b) else b).pop()
    input_ids = [special.cls, *a, special.sep, *b, special.sep]
    token_type_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return input_ids, token_type_ids


class NSPDataset(Dataset):
    """Items: dict of input_ids, token_type_ids, mlm_labels (all (L,)) and nsp_label () (0 = IsNext).

    seed=None (training): masks drawn from the generator `item` is given (dynamic masking: the
    ResumableLoader seeds one per draw, so each epoch masks anew).
    seed=int (validation): item i is always masked the same way, so val metrics are comparable.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        is_next: Sequence[int],
        special: BertSpecialIds,
        masking: MaskingConfig,
        max_len: int,
        seed: int | None = None,
    ) -> None:
        if len(pairs) != len(is_next):
            raise PipelineError(f"{len(pairs)} pairs but {len(is_next)} is_next labels")
        self.examples = [build_pair(a, b, special, max_len) for a, b in pairs]
        self.nsp_labels = [1 - int(x) for x in is_next]  # BERT's classes: 0 IsNext, 1 NotNext
        self.masking = masking
        self.seed = seed

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.item(index, None if self.seed is None else torch.Generator().manual_seed(self.seed + index))

    def item(self, index: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        input_ids, token_type_ids = (torch.tensor(x, dtype=torch.long) for x in self.examples[index])
        corrupted, labels = compute_mlm_masking(input_ids, self.masking, generator)
        return {
            "input_ids": corrupted,
            "token_type_ids": token_type_ids,
            "mlm_labels": labels,
            "nsp_label": torch.tensor(self.nsp_labels[index], dtype=torch.long),
        }


def collate_nsp(items: Sequence[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item; attention_mask is 1 on real tokens, 0 on padding."""
    width = max(len(item["input_ids"]) for item in items)
    fill = {"input_ids": pad_id, "token_type_ids": 0, "mlm_labels": IGNORE_INDEX, "attention_mask": 0}
    batch = {key: torch.full((len(items), width), value, dtype=torch.long) for key, value in fill.items()}
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        for key in ("input_ids", "token_type_ids", "mlm_labels"):
            batch[key][row, :n] = item[key]
        batch["attention_mask"][row, :n] = 1
    batch["nsp_label"] = torch.stack([item["nsp_label"] for item in items])  # (B,)
    return batch


def load_nsp_pairs(
    tasks_dir: str | Path, split: str, tokenizer: Tokenizer
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """Tokenized (a, b) pairs and is_next labels of `<tasks_dir>/nsp/<split>.parquet`."""
    frame = load_task_split(tasks_dir, "nsp", split, NSP_COLUMNS)
    bad = ~frame["is_next"].isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise PipelineError(
            f"{Path(tasks_dir) / 'nsp' / f'{split}.parquet'}: row {row}: "
            f"is_next must be 0 or 1, got {frame['is_next'].iloc[row]!r}"
        )
    encode = lambda texts: [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    a, b = encode(frame["text_a"].tolist()), encode(frame["text_b"].tolist())
    return list(zip(a, b)), frame["is_next"].astype(int).tolist()


def build_mlm_nsp_loaders(
    corpus: TokenizedCorpus, data: PretrainDataConfig, seq_len: int
) -> tuple[DataLoader, DataLoader]:
    """BERT pretraining batches: ingest's nsp pairs, masked afresh each epoch (val: from val_seed, fixed)."""
    tokenizer, manifest = corpus.tokenizer, corpus.manifest
    special = BertSpecialIds.from_tokenizer(tokenizer)
    special_ids = {tokenizer.token_to_id(t) for t in manifest.get("special_tokens", {}).values()}
    special_ids |= {special.pad, special.cls, special.sep, special.mask, special.unk}
    never_masked = tuple(sorted(i for i in special_ids if i is not None))
    masking = MaskingConfig(special.mask, manifest["vocab_size"], never_masked, data.mlm_probability)

    def dataset(split: str, seed: int | None) -> NSPDataset:
        pairs, is_next = load_nsp_pairs(corpus.tasks_dir, split, tokenizer)
        return NSPDataset(pairs, is_next, special, masking, seq_len, seed)

    collate = functools.partial(collate_nsp, pad_id=special.pad)
    return build_loaders(dataset("train", None), dataset(corpus.held_out, data.val_seed), data, collate)
