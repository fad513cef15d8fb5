"""Save/load the stage models (`model.safetensors` + `model.json`) and check tokenizer lineage.

No pickle: the weights are safetensors, and `model.json` holds the family (a name in
llm_pipeline.families), the architecture config, the sha256 of the tokenizer it was trained
with and the sha256 of the weights file, so a later stage rebuilds the model through the
registry, refuses a tokenizer or shards that do not belong to it, and notices a weights file
that is not the one saved. A fine-tuned classifier's config also carries its labels and input length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch.nn as nn

from llm_pipeline.errors import PipelineError
from llm_pipeline.families import family_of, get_family
from llm_pipeline.io import sha256_file
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.classifier import SequenceClassifier

PRETRAINED, CLASSIFIER = "pretrained", "classifier"  # the two kinds of model
MODEL_WEIGHTS, MODEL_CONFIG = "model.safetensors", "model.json"  # a saved model's two files


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


def model_files(folder: str | Path) -> list[Path]:
    """The files a saved model is made of: its weights and its JSON config."""
    return [Path(folder) / MODEL_WEIGHTS, Path(folder) / MODEL_CONFIG]


def has_model(folder: str | Path) -> bool:
    return all(path.is_file() for path in model_files(folder))


def save_pretrained(folder: str | Path, model: FamilyModel, tokenizer_sha256: str) -> None:
    _save(folder, model, {"kind": PRETRAINED, "config": model.config.to_dict(), "tokenizer_sha256": tokenizer_sha256})


def save_classifier(
    folder: str | Path, model: SequenceClassifier, labels: list[str], max_len: int, tokenizer_sha256: str
) -> None:
    meta = {"kind": CLASSIFIER, "config": model.backbone.config.to_dict(), "labels": labels, "max_len": max_len}
    _save(folder, model, meta | {"tokenizer_sha256": tokenizer_sha256})


def load_pretrained(folder: str | Path, family: str | None = None) -> tuple[FamilyModel, dict[str, Any]]:
    """A pretrained model of any family (or only `family`), in eval mode, with its metadata."""
    meta = _read_config(folder, PRETRAINED)
    if family is not None and meta["family"] != family:
        raise PipelineError(f"{folder}: expected a {family} model, found a {meta['family']} model")
    model = get_family(meta["family"]).model_from_config(meta["config"], where=str(Path(folder) / MODEL_CONFIG))
    _load_weights(model, meta, folder)
    return model.eval(), meta


def load_classifier(folder: str | Path) -> tuple[SequenceClassifier, dict[str, Any]]:
    meta = _read_config(folder, CLASSIFIER)
    backbone = get_family(meta["family"]).model_from_config(meta["config"], where=str(Path(folder) / MODEL_CONFIG))
    model = SequenceClassifier(backbone, len(meta["labels"]))
    _load_weights(model, meta, folder)
    return model.eval(), meta


def _save(folder: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    weights, config = model_files(folder)
    # save_model stores each tied tensor once (GPT's wte/lm_head, T5's shared/lm_head)
    safetensors.torch.save_model(model, str(weights))
    meta = {"family": family_of(model).name, **meta, "weights_sha256": sha256_file(weights)}
    config.write_text(json.dumps(meta, indent=2) + "\n")


def _read_config(folder: str | Path, kind: str) -> dict[str, Any]:
    weights, config = model_files(folder)
    for path in (config, weights):
        if not path.is_file():
            raise PipelineError(f"{path}: model file not found (has its stage run?)")
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{config}: not a readable model config ({exc}); rerun the stage that writes it") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind or "family" not in meta:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise PipelineError(f"{config}: expected a {kind} model config, found {found!r}")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise PipelineError(
            f"{weights}: not the weights {config.name} was saved with (sha256 mismatch): corrupt, truncated or "
            "replaced; rerun the stage that writes it"
        )
    return meta


def _load_weights(model: nn.Module, meta: dict[str, Any], folder: str | Path) -> None:
    weights = Path(folder) / MODEL_WEIGHTS
    try:
        safetensors.torch.load_model(model, str(weights))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise PipelineError(f"{weights}: weights do not fit the saved {meta['family']} config ({detail})") from None
    except safetensors.SafetensorError as exc:
        raise PipelineError(f"{weights}: not a readable safetensors file ({exc})") from None
