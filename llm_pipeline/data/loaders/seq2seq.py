"""Text-to-text fine-tuning batches (summarization, translation, QA, a user's seq2seq task).

Two ways a family learns input -> target (the registry says which one a family uses):

- encoder_decoder (T5): the encoder reads the formatted input, the decoder predicts the
  target + </s>; batches are collate_span_corruption's dict (the same T5 loss as pretraining).
- prompted (GPT): one sequence `prompt target <|endoftext|>`; next-token loss on the target
  (and its end token) only, the prompt positions are IGNORE_INDEX. Batches are (x, y) windows,
  right-padded, as the causal LM objective takes them.

The input text comes from a template over the row's columns, e.g. "summarize: {input}" or
"translate English to {lang}: {input}", so a prefix per target language is just a column.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, field_validator
from torch.utils.data import DataLoader, Dataset

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.config import build_eval_loader
from llm_pipeline.data.loaders.resumable import ResumableLoader
from llm_pipeline.data.loaders.span_corruption import collate_span_corruption
from llm_pipeline.errors import PipelineError
from llm_pipeline.models.blocks import IGNORE_INDEX

if TYPE_CHECKING:
    import pandas as pd
    from tokenizers import Tokenizer

Seq2SeqStyle = Literal["encoder_decoder", "prompted"]


def template_fields(template: str) -> list[str]:
    """The column names a template reads ("translate to {lang}: {input}" -> [lang, input])."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class Seq2SeqFormat(StageConfig):
    """How a row becomes model text: templates over its columns, and the token budgets."""

    input_template: str = "{input}"  # e.g. "summarize: {input}" (T5) or "{input}\nSummary:" (GPT)
    target_template: str = "{target}"  # e.g. " {target}" for GPT: a space after the prompt's colon
    max_source_len: int = Field(96, gt=0, description="input tokens kept (the head of a long input)")
    max_target_len: int = Field(32, gt=0, description="target tokens kept, end token included")

    @field_validator("input_template", "target_template")
    @classmethod
    def _valid_template(cls, template: str) -> str:
        try:
            template_fields(template)
        except ValueError as exc:
            raise ValueError(f"not a format template ({exc}); write columns as {{name}}, braces as {{{{ }}}}") from None
        return template

    def columns(self) -> list[str]:
        return sorted(set(template_fields(self.input_template)) | set(template_fields(self.target_template)))


@dataclass
class EncodedPair:
    source: list[int]  # encoder input (encoder_decoder) or prompt (prompted)
    target: list[int]  # ends with the end token


class Seq2SeqDataset(Dataset):
    def __init__(self, pairs: Sequence[EncodedPair], style: Seq2SeqStyle) -> None:
        self.pairs = list(pairs)
        self.style = style

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        if self.style == "encoder_decoder":
            return torch.tensor(pair.source), torch.tensor(pair.target)
        full = torch.tensor(pair.source + pair.target)  # prompt then target
        x, y = full[:-1], full[1:].clone()
        y[: len(pair.source) - 1] = IGNORE_INDEX  # no loss on predicting the prompt itself
        return x, y


def collate_prompted(items: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad (x, y) -> (B, T) each; padded targets are IGNORE_INDEX, so padding costs no loss
    and, under causal attention, no real token ever reads a pad."""
    x = torch.nn.utils.rnn.pad_sequence([a for a, _ in items], batch_first=True, padding_value=pad_id)
    y = torch.nn.utils.rnn.pad_sequence([b for _, b in items], batch_first=True, padding_value=IGNORE_INDEX)
    return x, y


def format_rows(frame: pd.DataFrame, template: str, where: str) -> list[str]:
    missing = [c for c in template_fields(template) if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"{where}: template {template!r} names column(s) {missing}; the task has {list(frame.columns)}"
        )
    return [template.format(**row) for row in frame.to_dict("records")]


def encode_pairs(
    tokenizer: Tokenizer, frame: pd.DataFrame, fmt: Seq2SeqFormat, style: Seq2SeqStyle, end_id: int, where: str
) -> list[EncodedPair]:
    """Tokenize each row's formatted input and target within the budgets.

    The target always ends with `end_id` (</s> or <|endoftext|>), so the model learns where to
    stop; an encoder input ends with it too (as T5's inputs do), after truncation as well.
    """
    sources = format_rows(frame, fmt.input_template, where)
    targets = format_rows(frame, fmt.target_template, where)
    pairs = []
    for src, tgt in zip(
        tokenizer.encode_batch(sources, add_special_tokens=False),
        tokenizer.encode_batch(targets, add_special_tokens=False),
        strict=True,
    ):
        source = list(src.ids)
        if style == "encoder_decoder":
            source = source[: fmt.max_source_len - 1] + [end_id]
        else:
            source = source[: fmt.max_source_len]
        target = list(tgt.ids)[: fmt.max_target_len - 1] + [end_id]
        pairs.append(EncodedPair(source, target))
    empty = sum(1 for p in pairs if len(p.source) < (2 if style == "encoder_decoder" else 1))
    if empty:
        raise PipelineError(f"{where}: {empty} input(s) tokenize to nothing; check the task's input column")
    return pairs


def build_seq2seq_loader(
    pairs: Sequence[EncodedPair], style: Seq2SeqStyle, pad_id: int, batch_size: int, train: bool, seed: int = 0
) -> DataLoader:
    """train: resumable and shuffled from `seed`, the last partial batch dropped; else every pair in order."""
    collate = (
        functools.partial(collate_span_corruption, pad_id=pad_id)
        if style == "encoder_decoder"
        else functools.partial(collate_prompted, pad_id=pad_id)
    )
    dataset = Seq2SeqDataset(pairs, style)
    if train:
        return ResumableLoader(dataset, batch_size, seed, collate)
    return build_eval_loader(dataset, batch_size, collate)
