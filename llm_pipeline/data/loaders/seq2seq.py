"""Text-to-text fine-tuning batches (summarization, translation, QA, a user's seq2seq task).

Two ways a family learns input -> target (the registry says which one a family uses):

- encoder_decoder (T5): the encoder reads the formatted input, the decoder predicts the
  target + </s>; batches are collate_span_corruption's dict (the same T5 loss as pretraining).
- prompted (GPT): one sequence `prompt target <|endoftext|>`; next-token loss on the target
  (and its end token) only, the prompt positions are IGNORE_INDEX. Batches are (x, y) windows,
  right-padded, as the causal LM objective takes them.

The input text comes from a template over the row's columns, e.g. "summarize: {input}" or
"translate English to {lang}: {input}", so a prefix per target language is just a column.
A long input loses the tail of its {input} field, never the template's prefix or cue.
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
INPUT_FIELD = "input"  # the long free-text column: the one cut to fit max_source_len


def template_fields(template: str) -> list[str]:
    """The column names a template reads ("translate to {lang}: {input}" -> [lang, input])."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


class Seq2SeqFormat(StageConfig):
    """How a row becomes model text: templates over its columns, and the token budgets."""

    input_template: str = "{input}"  # e.g. "summarize: {input}" (T5) or "{input}\nSummary:" (GPT)
    target_template: str = "{target}"  # e.g. " {target}" for GPT: a space after the prompt's colon
    max_source_len: int = Field(
        96, gt=0, description="input tokens kept (the template whole, the head of a long {input})"
    )
    max_target_len: int = Field(32, gt=0, description="target tokens kept, end token included")
    # a train pair over a budget: `cut` it to fit (a cut target teaches stopping mid-sentence, a
    # cut source with a whole target teaches inventing), or `drop` it from training (counted as
    # train_dropped_overlong; val and test pairs are always cut, as decoding sees them)
    overlong: Literal["cut", "drop"] = "cut"

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


@dataclass
class EncodedPairs:
    """encode_pairs_counted's result: the pairs, and how many were cut to fit the budgets."""

    pairs: list[EncodedPair]
    cut: list[bool]  # per pair: its source or its target was cut to fit
    sources_truncated: int  # inputs whose {input} field (or, without one, whose tail) was cut
    targets_truncated: int  # targets cut to max_target_len

    def whole(self) -> list[EncodedPair]:
        """The pairs that fit both budgets uncut."""
        return [pair for pair, cut in zip(self.pairs, self.cut, strict=True) if not cut]


def fit_sources(
    tokenizer: Tokenizer, frame: pd.DataFrame, fmt: Seq2SeqFormat, limit: int, where: str
) -> tuple[list[list[int]], list[bool]]:
    """Each row's filled input template as at most `limit` ids, and whether each row was cut.

    A too-long row has its {input} field cut by tokens (encode alone, keep the head, decode) and
    the template filled again, so the task prefix and a cue such as "\nSummary:" always survive.
    Without an {input} field the filled text's head is kept. A final hard cut keeps every row
    within `limit` (byte-level BPE can merge differently across the cut).
    """
    template = fmt.input_template
    filled = format_rows(frame, template, where)
    ids = [list(e.ids) for e in tokenizer.encode_batch(filled, add_special_tokens=False)]
    over = [i for i, row in enumerate(ids) if len(row) > limit]
    if INPUT_FIELD in template_fields(template):
        records = frame.to_dict("records")
        rests = {template.format(**(r | {INPUT_FIELD: ""})) for r in records}  # the template less its input
        longest = max((len(e.ids) for e in tokenizer.encode_batch(sorted(rests), add_special_tokens=False)), default=0)
        if limit - longest < 1:
            end = " and the end token" if limit < fmt.max_source_len else ""
            raise PipelineError(
                f"{where}: input template {template!r} takes {longest} token(s){end} of max_source_len "
                f"{fmt.max_source_len}, leaving none for the input; raise max_source_len or shorten the template"
            )
        if over:
            _cut_input_field(tokenizer, records, template, limit, ids, over)
    cut = set(over)
    return [row[:limit] for row in ids], [i in cut for i in range(len(ids))]


def _cut_input_field(
    tokenizer: Tokenizer, records: list[dict], template: str, limit: int, ids: list[list[int]], rows: list[int]
) -> None:
    """Refill `rows` of `ids` (those over `limit`) with their input cut by the overshoot, in place."""
    inputs = tokenizer.encode_batch([str(records[i][INPUT_FIELD]) for i in rows], add_special_tokens=False)
    input_ids = {i: list(e.ids) for i, e in zip(rows, inputs, strict=True)}
    keep = {i: max(0, len(input_ids[i]) - (len(ids[i]) - limit)) for i in rows}
    pending = rows
    for _ in range(3):  # the cut can merge differently than the whole text did: shave and retry
        texts = tokenizer.decode_batch([input_ids[i][: keep[i]] for i in pending], skip_special_tokens=False)
        refilled = [template.format(**(records[i] | {INPUT_FIELD: t})) for i, t in zip(pending, texts, strict=True)]
        for i, e in zip(pending, tokenizer.encode_batch(refilled, add_special_tokens=False), strict=True):
            ids[i] = list(e.ids)
        pending = [i for i in pending if len(ids[i]) > limit and keep[i] > 0]
        if not pending:
            return
        for i in pending:
            keep[i] = max(0, keep[i] - (len(ids[i]) - limit))


def encode_pairs_counted(
    tokenizer: Tokenizer, frame: pd.DataFrame, fmt: Seq2SeqFormat, style: Seq2SeqStyle, end_id: int, where: str
) -> EncodedPairs:
    """Tokenize each row's formatted input and target within the budgets, counting what was cut.

    The input keeps its template whole and cuts the {input} field (fit_sources). The target
    always ends with `end_id` (</s> or <|endoftext|>), so the model learns where to stop; an
    encoder input ends with it too (as T5's inputs do), after truncation as well.
    """
    limit = fmt.max_source_len - (1 if style == "encoder_decoder" else 0)  # room before the end token
    sources, source_cut = fit_sources(tokenizer, frame, fmt, limit, where)
    targets = tokenizer.encode_batch(format_rows(frame, fmt.target_template, where), add_special_tokens=False)
    pairs, cut, targets_cut = [], [], 0
    for source, tgt, source_was_cut in zip(sources, targets, source_cut, strict=True):
        if style == "encoder_decoder":
            source = source + [end_id]
        target_was_cut = len(tgt.ids) > fmt.max_target_len - 1
        targets_cut += target_was_cut
        cut.append(source_was_cut or target_was_cut)
        pairs.append(EncodedPair(source, list(tgt.ids)[: fmt.max_target_len - 1] + [end_id]))
    empty = sum(1 for p in pairs if len(p.source) < (2 if style == "encoder_decoder" else 1))
    if empty:
        raise PipelineError(f"{where}: {empty} input(s) tokenize to nothing; check the task's input column")
    return EncodedPairs(pairs, cut, sum(source_cut), targets_cut)


def encode_pairs(
    tokenizer: Tokenizer, frame: pd.DataFrame, fmt: Seq2SeqFormat, style: Seq2SeqStyle, end_id: int, where: str
) -> list[EncodedPair]:
    """encode_pairs_counted's pairs alone (evaluation and inference need no counts)."""
    return encode_pairs_counted(tokenizer, frame, fmt, style, end_id, where).pairs


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
