"""Use a saved model folder: texts in, texts or labels out (the pyfunc, `llm-pipeline generate`).

A folder is what pretrain or finetune writes: model.safetensors + model.json, tokenizer.json,
manifest.json. What a model does with a text follows from what it is (the fine-tune's task
kind in its manifest, else its family's pretraining objective):

- classification: the label (the head's argmax over the text's first `max_len` tokens);
- seq2seq: the target text; the text is the task's `input` column, formatted by the fine-tune's
  input template (e.g. "summarize: {input}"; other columns a template names, such as
  translation's `lang`, come with the row) and decoded as params/evaluate.yaml decodes by
  default (4 beams, no repeated 3-gram, up to the trained target length);
- generation, or a pretrained causal LM (gpt): the continuation (greedy unless temperature > 0);
- a pretrained span-corruption model (t5): the text with each <extra_id_i> replaced by the span
  predicted for it; a text without a sentinel gets <extra_id_0> at its end: its continuation;
- a pretrained masked LM (bert): the text with each [MASK] replaced by its most likely token
  (a text without [MASK] comes back as the tokenizer normalises it).

Decoding is what evaluation scores (prediction.py: decode_texts, predict_classes) over the
models' one `generate`; `complete` streams through its per-token callback. Nothing here imports
the evaluation package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from pydantic import Field, ValidationError
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.classification import build_classification_dataset, collate_classification
from llm_pipeline.data.loaders.seq2seq import Seq2SeqFormat, encode_pairs, template_fields
from llm_pipeline.data.tokenization.tokenizer import BERT_SPECIALS, end_id, load_tokenizer, pad_id, sentinels
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import get_family
from llm_pipeline.io import read_json, read_manifest
from llm_pipeline.model_files import CLASSIFIER, MODEL_CONFIG, check_tokenizer, load_classifier, load_pretrained
from llm_pipeline.prediction import decode_texts, predict_classes
from llm_pipeline.training.objectives import CausalLM, SpanCorruption

# what a model does with a text (see the module docstring)
CLASSIFY, SEQ2SEQ, CONTINUE, FILL_SPANS, FILL_MASKS = "classify", "seq2seq", "continue", "fill_spans", "fill_masks"
WRITERS = (SEQ2SEQ, CONTINUE, FILL_SPANS)  # the uses that write text token by token
TEXT_COLUMN = "text"


class PredictOptions(StageConfig):
    """How texts are decoded; None takes the model's own default (see `decoding`)."""

    max_new_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(0.0, ge=0)  # 0: greedy; > 0 samples (continuations, and `generate`)
    top_k: int | None = Field(None, gt=0)
    num_beams: int | None = Field(None, ge=1)  # seq2seq only; default 4
    no_repeat_ngram_size: int | None = Field(None, ge=0)  # seq2seq default 3, else 0
    seed: int = 0
    batch_size: int = Field(16, gt=0)


def build_options(values: Mapping[str, Any] | None) -> PredictOptions:
    """Options from a mapping (pyfunc params, CLI flags); None values keep the defaults."""
    given = {k: v for k, v in (values or {}).items() if v is not None}
    try:
        return PredictOptions(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PipelineError(f"decoding option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


@dataclass
class LoadedModel:
    folder: Path
    use: str  # CLASSIFY | SEQ2SEQ | CONTINUE | FILL_SPANS | FILL_MASKS
    family: str
    model: Any  # a family model, or a SequenceClassifier (CLASSIFY)
    tokenizer: Tokenizer
    manifest: dict[str, Any]  # what the stage recorded: task kind, labels, format, ...

    @property
    def what(self) -> str:
        """e.g. 'a bert classification model', for messages."""
        task = self.manifest.get("kind") or "pretrained"
        return f"a {self.family} {task} model"

    def context(self) -> int | None:
        """Longest input it takes: its window (gpt, bert), else the input length it was trained on."""
        config = getattr(self.model, "config", None)
        if config is not None and config.max_seq_len:
            return int(config.max_seq_len)
        if self.use == SEQ2SEQ:
            return int(self.manifest["format"]["max_source_len"])
        seq_len = self.manifest.get("counts", {}).get("seq_len")
        return int(seq_len) if seq_len else None


def load_model_folder(folder: str | Path) -> LoadedModel:
    """A stage's model folder, checked (weights, tokenizer) and in eval mode."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    meta = read_json(folder / MODEL_CONFIG)
    model: nn.Module
    if meta.get("kind") == CLASSIFIER:
        model, meta = load_classifier(folder)
        use = CLASSIFY
    else:
        model, meta = load_pretrained(folder)
        kind = manifest.get("kind")
        objective = get_family(meta["family"]).objective
        if kind == "seq2seq":
            use = SEQ2SEQ
        elif kind == "generation" or objective is CausalLM:
            use = CONTINUE
        else:
            use = FILL_SPANS if objective is SpanCorruption else FILL_MASKS
    tokenizer_path = folder / "tokenizer.json"
    check_tokenizer(tokenizer_path, meta["tokenizer_sha256"], f"the model {folder}")
    return LoadedModel(folder, use, meta["family"], model.eval(), load_tokenizer(tokenizer_path), manifest)


def predict(loaded: LoadedModel, rows: pd.DataFrame, options: PredictOptions | None = None) -> list[str]:
    """One output text (or label) per row of `rows` (a `text` column, plus any a template names)."""
    options = options or PredictOptions()
    if TEXT_COLUMN not in rows.columns:
        raise PipelineError(f"input has no {TEXT_COLUMN!r} column (columns: {', '.join(map(str, rows.columns))})")
    if len(rows) == 0:
        return []
    texts = rows[TEXT_COLUMN]
    empty = texts.isna() | texts.astype(str).str.strip().eq("")
    if empty.any():
        first = int(empty.to_numpy().nonzero()[0][0])
        raise PipelineError(
            f"row {first}: empty {TEXT_COLUMN!r} ({int(empty.sum())} of {len(rows)} rows); every row needs text"
        )
    if loaded.use == CLASSIFY:
        return classify(loaded, rows[TEXT_COLUMN].astype(str).tolist(), options.batch_size)
    if loaded.use == FILL_MASKS:
        return [fill_masks(loaded, text) for text in rows[TEXT_COLUMN].astype(str)]
    if loaded.use == SEQ2SEQ and options.temperature == 0:
        return translate(loaded, rows, options)
    return [complete(loaded, row, options) for row in rows.to_dict("records")]


def classify(loaded: LoadedModel, texts: list[str], batch_size: int) -> list[str]:
    labels: list[str] = loaded.manifest["labels"]
    # encoded exactly as fine-tuning and evaluate encode (specials, head of the text); the label
    # column is a placeholder the dataset wants, the predictions ignore it
    frame = pd.DataFrame({"text": texts, "label": labels[0]})
    dataset, _ = build_classification_dataset(loaded.tokenizer, frame, labels, loaded.manifest["max_len"])
    collate = functools.partial(collate_classification, pad_id=pad_id(loaded.tokenizer))
    preds, _ = predict_classes(loaded.model, DataLoader(dataset, batch_size=batch_size, collate_fn=collate))
    return [labels[i] for i in preds]


def translate(loaded: LoadedModel, rows: pd.DataFrame, options: PredictOptions) -> list[str]:
    """Seq2seq outputs of a batch, decoded deterministically as evaluate decodes them."""
    fmt = Seq2SeqFormat(**loaded.manifest["format"])
    return decode_texts(
        loaded.model,
        loaded.tokenizer,
        seq2seq_sources(loaded, rows),
        loaded.manifest["style"],
        pad_id=loaded.manifest["pad_id"],
        end_id=loaded.manifest["end_id"],
        max_new_tokens=options.max_new_tokens or fmt.max_target_len,
        batch_size=options.batch_size,
        num_beams=options.num_beams or 4,
        no_repeat_ngram_size=3 if options.no_repeat_ngram_size is None else options.no_repeat_ngram_size,
    )


def seq2seq_sources(loaded: LoadedModel, rows: pd.DataFrame) -> list[list[int]]:
    """The encoder inputs / prompts of rows, formatted and cut as the fine-tune made them."""
    fmt = Seq2SeqFormat(**loaded.manifest["format"])
    missing = [c for c in template_fields(fmt.input_template) if c != "input" and c not in rows.columns]
    if missing:
        raise PipelineError(
            f"the model's input template {fmt.input_template!r} needs column(s) {missing} beside {TEXT_COLUMN!r}; "
            f"the input has {[str(c) for c in rows.columns]}"
        )
    frame = rows.rename(columns={TEXT_COLUMN: "input"}).assign(target="")
    pairs = encode_pairs(
        loaded.tokenizer, frame, fmt, loaded.manifest["style"], loaded.manifest["end_id"], "the input rows"
    )
    return [pair.source for pair in pairs]


def complete(
    loaded: LoadedModel,
    row: Mapping[str, Any],
    options: PredictOptions | None = None,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """The text a writer model (gpt, t5) produces for one row, token by token; `on_text` receives
    each newly decodable piece as soon as it is generated (streaming)."""
    options = options or PredictOptions()
    if loaded.use not in WRITERS:
        raise PipelineError(f"{loaded.folder}: {loaded.what} does not write text (generate needs a gpt or t5 model)")
    text = str(row[TEXT_COLUMN])
    tok = loaded.tokenizer
    stop = end_id(tok)
    span_ids = sentinel_ids(tok)
    if loaded.use == SEQ2SEQ:
        source = seq2seq_sources(loaded, pd.DataFrame([dict(row)]))[0]
    else:
        source = tok.encode(text, add_special_tokens=False).ids
    if not source:
        raise PipelineError("the prompt tokenizes to nothing; give text the tokenizer knows")
    context = loaded.context()
    if context and len(source) > context:
        raise PipelineError(
            f"the prompt is {len(source)} tokens, longer than the model's context of {context} tokens; shorten it"
        )
    stops = [stop]
    if loaded.use == FILL_SPANS:  # encoder input: the text, its sentinels (one at the end if none), </s>
        n_spans = sum(1 for i in source if i in span_ids)
        if n_spans == 0:
            source, n_spans = [*source, span_ids[0]], 1
        source = [*source, stop]
        if n_spans < len(span_ids):
            stops.append(span_ids[n_spans])  # the sentinel after the last: its spans are all written
    stream = TextStream(tok, set(stops), on_text)
    out = loaded.model.generate(
        torch.tensor([source]),
        options.max_new_tokens or 40,
        temperature=options.temperature,
        top_k=options.top_k,
        stop_ids=tuple(stops),
        generator=torch.Generator().manual_seed(options.seed),
        no_repeat_ngram_size=options.no_repeat_ngram_size or 0,
        on_token=stream.push,
    )[0].tolist()
    stream.close()
    new = out[: next((i for i, t in enumerate(out) if t in stops), len(out))]
    if loaded.use == FILL_SPANS:
        return fill_spans(tok, text, new, span_ids)
    written = tok.decode(new)
    return written.strip() if loaded.use == SEQ2SEQ else written


def sentinel_ids(tok: Tokenizer) -> list[int]:
    """Ids of <extra_id_0>, <extra_id_1>, ... as far as the tokenizer has them (none: not T5's)."""
    ids: list[int] = []
    while (found := tok.token_to_id(f"<extra_id_{len(ids)}>")) is not None:
        ids.append(found)
    return ids


def fill_spans(tok: Tokenizer, text: str, ids: list[int], span_ids: list[int]) -> str:
    """T5's output `<extra_id_0> span0 <extra_id_1> span1 ...` put back into the text."""
    spans: dict[int, list[int]] = {}
    current = None
    for token in ids:
        if token in span_ids:
            current = span_ids.index(token)
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    names = sentinels(len(span_ids))
    if not any(name in text for name in names):  # a continuation: the span for the appended sentinel
        return tok.decode(spans.get(0, []))
    for i, name in enumerate(names):
        text = text.replace(name, tok.decode(spans.get(i, [])))
    return text


@torch.no_grad()
def fill_masks(loaded: LoadedModel, text: str) -> str:
    tok = loaded.tokenizer
    ids = tok.encode(text, add_special_tokens=True).ids  # [CLS] text [SEP], as pretraining read it
    context = loaded.context()
    if context and len(ids) > context:
        raise PipelineError(f"the text is {len(ids)} tokens, longer than the model's context of {context} tokens")
    mask = tok.token_to_id(BERT_SPECIALS["mask"])
    logits = loaded.model(torch.tensor([ids])).logits[0]  # (T, V)
    specials = [tok.token_to_id(t) for t in BERT_SPECIALS.values()]
    logits[:, [i for i in specials if i is not None]] = float("-inf")  # a word, not a special token
    filled = [int(logits[i].argmax()) if token == mask else token for i, token in enumerate(ids)]
    return tok.decode(filled)


class TextStream:
    """Token ids in, newly decodable text out: decodes the whole output each time and hands on
    what grew, holding back a trailing U+FFFD (half of a multi-byte character, byte-level BPE)."""

    def __init__(self, tokenizer: Tokenizer, stops: set[int], on_text: Callable[[str], None] | None) -> None:
        self.tokenizer, self.stops, self.on_text = tokenizer, stops, on_text
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False

    def push(self, new: torch.Tensor) -> None:
        """new: (1, 1) ids of one step of `generate`."""
        token = int(new[0, 0])
        if self.stopped or token in self.stops:
            self.stopped = True
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self._send(text)

    def close(self) -> None:
        self._send(self.tokenizer.decode(self.ids))

    def _send(self, text: str) -> None:
        if self.on_text is not None and text.startswith(self.sent) and len(text) > len(self.sent):
            self.on_text(text[len(self.sent) :])
            self.sent = text
