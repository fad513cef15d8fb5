"""Pure nn.Module models: no Lightning, no file I/O."""

from llm_pipeline.models.bert import BERT, BertConfig
from llm_pipeline.models.checks import SequenceTooLongError
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT, IGNORE_INDEX, GPTConfig
from llm_pipeline.models.presets import (
    BERT_PRESETS,
    FAMILIES,
    PRESETS,
    T5_PRESETS,
    build_config,
    build_gpt_config,
    build_model,
    check_seq_len,
    model_from_config,
)
from llm_pipeline.models.t5 import T5, T5Config

__all__ = [
    "BERT", "BERT_PRESETS", "BertConfig", "FAMILIES", "GPT", "GPTConfig", "IGNORE_INDEX", "PRESETS",
    "SequenceClassifier", "SequenceTooLongError", "T5", "T5Config", "T5_PRESETS", "build_config",
    "build_gpt_config", "build_model", "check_seq_len", "model_from_config",
]
