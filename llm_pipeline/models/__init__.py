"""Pure nn.Module models: no Lightning, no file I/O. Every family's forward returns a ModelOutput
(logits only; objectives in llm_pipeline.training own every loss), one `generate` signature
serves GPT and T5, and each model counts its own FLOPs. The registry of families is
llm_pipeline.families."""

from llm_pipeline.models.bert import BERT, BERT_PRESETS, BertConfig
from llm_pipeline.models.blocks import IGNORE_INDEX
from llm_pipeline.models.checks import SequenceTooLongError, check_config_seq_len
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT, GPT_PRESETS, GPT_STYLES, GPTConfig
from llm_pipeline.models.output import ModelOutput
from llm_pipeline.models.t5 import T5, T5_PRESETS, T5Config

__all__ = [
    "BERT",
    "BERT_PRESETS",
    "BertConfig",
    "GPT",
    "GPTConfig",
    "GPT_PRESETS",
    "GPT_STYLES",
    "IGNORE_INDEX",
    "ModelOutput",
    "SequenceClassifier",
    "SequenceTooLongError",
    "T5",
    "T5Config",
    "T5_PRESETS",
    "check_config_seq_len",
]
