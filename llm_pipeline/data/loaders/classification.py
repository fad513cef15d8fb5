"""Classification batches: tokenized texts with integer labels, right-padded per batch.

`build_classification_dataset` encodes a task split (read with tasks/loading.py) into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from llm_pipeline.errors import PipelineError

if TYPE_CHECKING:
    import pandas as pd
    from tokenizers import Tokenizer


class TextClassificationDataset(Dataset):
    """Items are (token_ids (L,), label ()) with L <= max_len; the head of a long text is kept."""

    def __init__(self, token_ids: Sequence[Sequence[int]], labels: Sequence[int], max_len: int) -> None:
        if len(token_ids) != len(labels):
            raise PipelineError(f"{len(token_ids)} texts but {len(labels)} labels")
        empty = [i for i, ids in enumerate(token_ids) if len(ids) == 0]
        if empty:
            raise PipelineError(f"{len(empty)} texts tokenize to nothing (first at row {empty[0]})")
        self.token_ids = [list(ids[:max_len]) for ids in token_ids]
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.token_ids[index], dtype=torch.long), torch.tensor(self.labels[index])


def collate_classification(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest item -> input_ids (B, T), lengths (B,), labels (B,).

    The pad id is never attended to by real tokens (causal attention, right padding), so
    any id works; use `functools.partial(collate_classification, pad_id=...)` to choose one.
    """
    lengths = torch.tensor([len(ids) for ids, _ in batch], dtype=torch.long)  # (B,)
    input_ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for row, (ids, _) in enumerate(batch):
        input_ids[row, : len(ids)] = ids
    labels = torch.stack([label for _, label in batch])  # (B,)
    return input_ids, lengths, labels


def build_classification_dataset(
    tokenizer: Tokenizer, frame: pd.DataFrame, labels: list[str], max_len: int
) -> tuple[TextClassificationDataset, int]:
    """Encode texts and map labels to ids. Returns the dataset and how many examples had a
    label the model does not know (absent from train); those are left out, and counted."""
    index = {label: i for i, label in enumerate(labels)}
    known = frame[frame["label"].isin(index)]
    # with its specials: BERT reads [CLS] text [SEP] (the head pools [CLS]); bpe adds none, unigram </s>
    encodings = tokenizer.encode_batch(known["text"].tolist(), add_special_tokens=True)
    dataset = TextClassificationDataset([e.ids for e in encodings], [index[label] for label in known["label"]], max_len)
    return dataset, len(frame) - len(known)
