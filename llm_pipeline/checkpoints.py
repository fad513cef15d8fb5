"""Save/load the stage model files (`model.pt`) and check tokenizer lineage.

A model file carries its family (a name in llm_pipeline.registry), the architecture config and
the sha256 of the tokenizer it was trained with, so a later stage rebuilds it through the
registry and can refuse a tokenizer or shards that do not belong to it. A fine-tuned
classifier's file also carries its labels and input length.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.registry import family_of, get_family

PRETRAINED, CLASSIFIER = "pretrained", "classifier"  # the two kinds of model file


def check_tokenizer(tokenizer_path: str | Path, expected_sha: str, what: str) -> str:
    """Raise unless the tokenizer file is the one `what` was made with; return its sha256."""
    tokenizer_path = Path(tokenizer_path)
    if not tokenizer_path.is_file():
        raise PipelineError(f"{tokenizer_path}: tokenizer not found (run the tokenize stage first)")
    actual = sha256_file(tokenizer_path)
    if actual != expected_sha:
        raise PipelineError(
            f"{what} was made with tokenizer sha256 {expected_sha[:12]}…, but {tokenizer_path} is "
            f"{actual[:12]}…; re-run the stages after tokenize (dvc repro) or point at the right tokenizer"
        )
    return actual


def save_pretrained(path: str | Path, model: FamilyModel, tokenizer_sha256: str) -> None:
    torch.save(
        {
            "kind": PRETRAINED,
            "family": family_of(model).name,
            "config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "tokenizer_sha256": tokenizer_sha256,
        },
        path,
    )


def save_classifier(
    path: str | Path, model: SequenceClassifier, labels: list[str], max_len: int, tokenizer_sha256: str
) -> None:
    torch.save(
        {
            "kind": CLASSIFIER,
            "family": family_of(model).name,
            "config": model.backbone.config.to_dict(),
            "labels": labels,
            "max_len": max_len,
            "state_dict": model.state_dict(),
            "tokenizer_sha256": tokenizer_sha256,
        },
        path,
    )


def load_pretrained(path: str | Path, family: str | None = None) -> tuple[FamilyModel, dict[str, Any]]:
    """A pretrained model of any family (or only `family`), in eval mode, with its metadata."""
    payload = _read(path, PRETRAINED)
    if family is not None and payload["family"] != family:
        raise PipelineError(f"{path}: expected a {family} model, found a {payload['family']} model")
    model = get_family(payload["family"]).model_from_config(payload["config"], where=str(path))
    _load_weights(model, payload, path)
    return model.eval(), payload


def load_classifier(path: str | Path) -> tuple[SequenceClassifier, dict[str, Any]]:
    payload = _read(path, CLASSIFIER)
    backbone = get_family(payload["family"]).model_from_config(payload["config"], where=str(path))
    model = SequenceClassifier(backbone, len(payload["labels"]))
    _load_weights(model, payload, path)
    return model.eval(), payload


def _read(path: str | Path, kind: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: model file not found (has its stage run?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipelineError(
            f"{path}: not a readable model file, corrupt or truncated ({reason}); rerun the stage that writes it"
        ) from None
    if not isinstance(payload, dict) or payload.get("kind") != kind or "family" not in payload:
        found = payload.get("kind") if isinstance(payload, dict) else type(payload).__name__
        raise PipelineError(f"{path}: expected a {kind} model file, found {found!r}")
    return payload


def _load_weights(model: nn.Module, payload: dict[str, Any], path: str | Path) -> None:
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise PipelineError(f"{path}: weights do not fit the saved {payload['family']} config ({first})") from None
