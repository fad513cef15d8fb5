"""Model folders as pretrain / finetune write them (model files, tokenizer.json, manifest.json),
built directly from tiny models and tokenizers trained on the synthetic corpus: for the tests of
what uses a trained model (inference, the pyfunc, export, generate)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter
from tokenizers import Tokenizer

from llm_pipeline.data.tokenization.tokenizer import TokenizerSpec, end_id, pad_id, train_tokenizer
from llm_pipeline.families import build_model, get_family
from llm_pipeline.io import sha256_file, write_json
from llm_pipeline.model_files import save_classifier, save_pretrained
from llm_pipeline.models.classifier import SequenceClassifier
from tests.conftest import make_documents

SPECS = {
    "bpe": {"kind": "bpe", "vocab_size": 300},
    "wordpiece": {"kind": "wordpiece", "vocab_size": 300},
    "unigram": {"kind": "unigram", "vocab_size": 300, "extra_ids": 10},
}


@functools.cache
def tokenizer_json(kind: str) -> str:
    spec = TypeAdapter(TokenizerSpec).validate_python(SPECS[kind])
    return train_tokenizer(spec, lambda: make_documents(200, seed=5)).to_str()


def write_model_folder(
    folder: Path,
    family: str,
    *,
    kind: str | None = None,
    labels: list[str] | None = None,
    fmt: dict[str, Any] | None = None,
    seed: int = 0,
    preset: str = "tiny",
    model=None,
    **overrides: Any,
) -> Path:
    """A pretrained folder (kind None), or a fine-tune's: classification (labels), seq2seq (fmt), generation.

    `model`: the family model to save (default: a fresh one at `preset`), or for classification
    the SequenceClassifier (a family model gets a fresh head)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = get_family(family)
    tokenizer = Tokenizer.from_str(tokenizer_json(spec.tokenizer_kind))
    (folder / "tokenizer.json").write_text(tokenizer.to_str())
    sha = sha256_file(folder / "tokenizer.json")
    torch.manual_seed(seed)
    if model is None:
        fields = spec.tokenizer_fields(tokenizer, "tokenizer.json") | overrides
        model = build_model(family, preset, tokenizer.get_vocab_size(), **fields).eval()
    manifest: dict[str, Any] = {"family": family, "tokenizer_sha256": sha, "counts": {"seq_len": 32}}
    if kind is not None:
        manifest |= {"kind": kind, "task": "task", "family": family}
    if kind == "classification":
        labels = labels or ["games", "net", "sound"]
        classifier = model if isinstance(model, SequenceClassifier) else SequenceClassifier(model, len(labels))
        save_classifier(folder, classifier.eval(), labels, 24, sha)
        manifest |= {"labels": labels, "max_len": 24}
    else:
        save_pretrained(folder, model, sha)
    if kind == "seq2seq":
        style = spec.seq2seq_style
        default = {"max_source_len": 24, "max_target_len": 6}
        manifest |= {"style": style, "format": default | (fmt or {})}
        manifest |= {"end_id": end_id(tokenizer), "pad_id": pad_id(tokenizer)}
    write_json(folder / "manifest.json", manifest)
    return folder
