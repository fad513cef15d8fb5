"""The model families, each defined once (in the spirit of torchtitan's ModelSpec).

A FamilySpec names everything that differs between families: the config and model classes,
the named presets, the tokenizer kind it pretrains with, the pretraining objective, the
builder of its pretraining batches and the config fields its tokenizer fixes. Every other module
asks `get_family(name)`; adding a family is one entry here plus its own model and loader files
(and, optionally, its `transformers` twin in models/hf_convert.py, which only tests, bench and
export import).

The registry sits above models, objectives and loaders because a family spans all three.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn
from tokenizers import Tokenizer

from llm_pipeline.data.loaders.causal_lm import build_causal_lm_loaders
from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus
from llm_pipeline.data.loaders.mlm_nsp import build_mlm_nsp_loaders
from llm_pipeline.data.loaders.seq2seq import Seq2SeqStyle
from llm_pipeline.data.loaders.span_corruption import build_span_corruption_loaders, t5_tokenizer_fields
from llm_pipeline.errors import PipelineError
from llm_pipeline.models import (
    BERT,
    BERT_PRESETS,
    GPT,
    GPT_PRESETS,
    GPT_STYLES,
    T5,
    T5_PRESETS,
    BertConfig,
    GPTConfig,
    T5Config,
)
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.training.objectives import CausalLM, MaskedLMWithNSP, Objective, SpanCorruption

# (corpus, data config, seq_len) -> (train loader, val loader)
BuildLoaders = Callable[[TokenizedCorpus, PretrainDataConfig, int], tuple[Any, Any]]


def _no_fields(tokenizer: Tokenizer, where: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class FamilySpec:
    name: str
    config_cls: type
    model_cls: type[FamilyModel]
    presets: Mapping[str, Mapping[str, Any]]
    tokenizer_kind: str  # the tokenize stage kind it needs: bpe | wordpiece | unigram
    objective: Callable[[], Objective]  # its pretraining objective
    build_loaders: BuildLoaders  # its pretraining batches
    tokenizer_fields: Callable[[Tokenizer, str], dict[str, Any]] = _no_fields  # config fields the tokenizer fixes
    styles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # named field groups: `style` override
    default_seq_len: int | None = None  # input length when neither params nor the model bound it
    # how it fine-tunes on input -> target tasks: encoder reads, decoder writes (T5), or one
    # sequence prompt + target with the loss on the target (GPT); None: it cannot write text
    seq2seq_style: Seq2SeqStyle | None = None

    @property
    def task_kinds(self) -> tuple[str, ...]:
        """The downstream task kinds (data/tasks/loading.TASK_KINDS) it can serve: every family
        classifies (a head over sequence_features); writers do seq2seq; causal LMs continue text."""
        kinds = ["classification"]
        if self.seq2seq_style is not None:
            kinds.append("seq2seq")
        if self.objective is CausalLM:
            kinds.append("generation")
        return tuple(kinds)

    def preset_config(self, preset: str, vocab_size: int, **overrides: Any) -> Any:
        """Config for a named preset; `overrides` replace single fields (e.g. dropout=0.1), `style` a group."""
        if preset not in self.presets:
            raise PipelineError(
                f"unknown {self.name} model preset {preset!r}; known {self.name} presets: "
                f"{', '.join(sorted(self.presets))}"
            )
        fields = dict(self.presets[preset])
        style = overrides.pop("style", None)
        if style is not None:
            if style not in self.styles:
                known = f"known {self.name} styles: {', '.join(self.styles)}" if self.styles else "it has none"
                raise PipelineError(f"model style {style!r} is not a {self.name} style ({known})")
            fields.update(self.styles[style])
        fields.update(overrides, vocab_size=vocab_size)
        try:
            return self.config_cls(**fields)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"{self.name} model preset {preset!r} with overrides {overrides}: {exc}") from None

    def build_model(self, preset: str, vocab_size: int, **overrides: Any) -> FamilyModel:
        """A freshly initialised model at a named preset."""
        return self.model_cls(self.preset_config(preset, vocab_size, **overrides))

    def model_from_config(self, config: Mapping[str, Any], where: str = "saved config") -> FamilyModel:
        """Rebuild a model from its saved `config.to_dict()` (weights are loaded by the caller)."""
        try:
            return self.model_cls(self.config_cls(**config))
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"{where}: not a valid {self.name} config: {exc}") from None

    def seq_len(self, config: Any, requested: int | None) -> int:
        """The input length a run trains on: params' value, else the model's maximum, else the family default."""
        seq_len = requested or config.max_seq_len or self.default_seq_len
        if seq_len is None:
            raise PipelineError(f"{self.name}: no input length; set data.seq_len")
        return seq_len


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            "gpt",
            GPTConfig,
            GPT,
            GPT_PRESETS,
            tokenizer_kind="bpe",
            objective=CausalLM,
            build_loaders=build_causal_lm_loaders,
            styles=GPT_STYLES,
            seq2seq_style="prompted",
        ),
        FamilySpec(
            "bert",
            BertConfig,
            BERT,
            BERT_PRESETS,
            tokenizer_kind="wordpiece",
            objective=MaskedLMWithNSP,
            build_loaders=build_mlm_nsp_loaders,
        ),
        FamilySpec(
            "t5",
            T5Config,
            T5,
            T5_PRESETS,
            tokenizer_kind="unigram",
            objective=SpanCorruption,
            build_loaders=build_span_corruption_loaders,
            tokenizer_fields=t5_tokenizer_fields,
            default_seq_len=128,
            seq2seq_style="encoder_decoder",
        ),
    )
}


def get_family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise PipelineError(f"unknown model family {name!r}; known families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> FamilySpec:
    """The family a model instance belongs to (a SequenceClassifier: its backbone's)."""
    model = getattr(model, "backbone", model)
    for spec in FAMILIES.values():
        if isinstance(model, spec.model_cls):
            return spec
    raise PipelineError(f"{type(model).__name__} is not a model of any registered family ({', '.join(FAMILIES)})")


def build_model(family: str, preset: str, vocab_size: int, **overrides: Any) -> FamilyModel:
    """Shorthand for get_family(family).build_model(...)."""
    return get_family(family).build_model(preset, vocab_size, **overrides)
