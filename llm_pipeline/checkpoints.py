"""Save/load the stage model files (`model.pt`) and check tokenizer lineage.

A model file carries the architecture config and the sha256 of the tokenizer it was trained
with, so a later stage can refuse a tokenizer or shards that do not belong to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT, GPTConfig
from llm_pipeline.models.presets import model_from_config

FAMILIES = ("gpt", "bert", "t5")


def check_tokenizer(tokenizer_path: str | Path, expected_sha: str, what: str) -> str:
    """Raise unless the tokenizer file is the one `what` was made with; return its sha256."""
    tokenizer_path = Path(tokenizer_path)
    if not tokenizer_path.is_file():
        raise PipelineError(f"{tokenizer_path}: tokenizer not found (run the tokenize stage first)")
    actual = sha256_file(tokenizer_path)
    if actual != expected_sha:
        raise PipelineError(
            f"{what} was made with tokenizer sha256 {expected_sha[:12]}…, but {tokenizer_path} is "
            f"{actual[:12]}…; re-run the stages after tokenize (dvc repro) or point at the right tokenizer")
    return actual


def save_pretrained(path: str | Path, family: str, model: nn.Module, tokenizer_sha256: str) -> None:
    torch.save({"kind": family, "config": model.config.to_dict(), "state_dict": model.state_dict(),
                "tokenizer_sha256": tokenizer_sha256}, path)


def _load(path: str | Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found (has its stage run?)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("kind") not in kinds:
        raise PipelineError(f"{path}: expected a {' or '.join(kinds)} model file, found {payload.get('kind')!r}")
    return payload


def load_pretrained(path: str | Path, family: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A pretrained model of any family (or only `family`), in eval mode, with its metadata."""
    payload = _load(path, (family,) if family else FAMILIES)
    model = model_from_config(payload["kind"], payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload


def load_lm(path: str | Path) -> tuple[GPT, dict[str, Any]]:
    return load_pretrained(path, "gpt")


def save_classifier(path: str | Path, model: SequenceClassifier, labels: list[str],
                    max_len: int, tokenizer_sha256: str) -> None:
    torch.save({"kind": "classifier", "config": model.backbone.config.to_dict(), "labels": labels,
                "max_len": max_len, "state_dict": model.state_dict(),
                "tokenizer_sha256": tokenizer_sha256}, path)


def load_classifier(path: str | Path) -> tuple[SequenceClassifier, dict[str, Any]]:
    payload = _load(path, ("classifier",))
    model = SequenceClassifier(GPT(GPTConfig(**payload["config"])), len(payload["labels"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload
