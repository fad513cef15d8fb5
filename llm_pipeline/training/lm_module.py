"""Causal-LM pretraining of a GPT: PretrainModule with the CausalLM objective, built from a config."""

from __future__ import annotations

from typing import Any

import torch

from llm_pipeline.models.gpt import GPT, GPTConfig
from llm_pipeline.training.objectives import CausalLM
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.pretrain_module import PretrainModule

__all__ = ["CausalLMModule", "OptimConfig"]


class CausalLMModule(PretrainModule):
    """Next-token prediction. Logs train/loss, train/lr per step; val/loss, val/ppl per validation.

    Built from plain dicts as well as config objects, so `load_from_checkpoint` can rebuild it
    from the saved hyperparameters alone.
    """

    def __init__(self, model_config: GPTConfig | dict[str, Any], optim: OptimConfig | dict[str, Any]) -> None:
        model_config = model_config if isinstance(model_config, GPTConfig) else GPTConfig(**model_config)
        super().__init__(GPT(model_config), CausalLM(), optim)
        self.save_hyperparameters({"model_config": model_config.to_dict(), "optim": self.optim.model_dump()})

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]
