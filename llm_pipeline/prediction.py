"""Batch prediction with a trained model, shared by evaluation and serving (inference.py, the
pyfunc): a classifier's labels, a writer's decoded texts. Evaluation scores what these return;
serving returns it, so the two cannot drift apart and serving imports nothing of evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.training.objectives import lengths_to_mask


@torch.no_grad()
def predict_classes(model: SequenceClassifier, loader: DataLoader) -> tuple[list[int], list[int]]:
    preds, gold = [], []
    for input_ids, lengths, labels in loader:
        logits = model(input_ids, lengths_to_mask(lengths, input_ids.size(1))).logits  # (B, K)
        preds += logits.argmax(dim=-1).tolist()
        gold += labels.tolist()
    return preds, gold


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths -> ids, mask (B, T). left=True puts the real tokens at the right
    end, so every prompt continues from its own last token (GPT); left=False puts them first, as
    encoder inputs are read (T5)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def decode_texts(
    model,
    tokenizer: Tokenizer,
    sources: Sequence[Sequence[int]],
    style: str,
    *,
    pad_id: int,
    end_id: int,
    max_new_tokens: int,
    batch_size: int,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """Decode a text for each encoded source: the encoder input (encoder_decoder) or the prompt
    (prompted, left-padded so every row continues from its own last token); stops at end_id."""
    texts: list[str] = []
    left = style != "encoder_decoder"
    for start in range(0, len(sources), batch_size):
        ids, mask = pad_rows(sources[start : start + batch_size], pad_id, left=left)
        out = model.generate(
            ids,
            max_new_tokens,
            attention_mask=mask,
            stop_ids=(end_id,),
            num_beams=num_beams,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )  # (b, n): new tokens only, padded with end_id after a stop
        for row in out.tolist():
            row = row[: row.index(end_id)] if end_id in row else row
            texts.append(tokenizer.decode(row).strip())
    return texts
