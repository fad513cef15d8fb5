"""Pure nn.Module models: no Lightning, no file I/O."""

from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.models.gpt import GPT, GPTConfig
from llm_pipeline.models.presets import PRESETS, build_gpt_config

__all__ = ["GPT", "GPTConfig", "PRESETS", "SequenceClassifier", "build_gpt_config"]
