"""The optimizer (AdamW, or Adafactor as T5 was trained) with the usual decay/no-decay split, and
the Lightning optimizer config both modules share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn as nn
from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.training.schedule import build_schedule

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

# weight decay pulls these toward zero for no benefit: a norm's gain should sit near 1,
# a bias has no scale to control, and an embedding row is only touched when its token occurs.
# Norms and biases are the 1-D parameters (any norm class, e.g. RMSNorm); embeddings go by module.
_NO_DECAY_MODULES = (nn.Embedding,)


class OptimConfig(StageConfig):
    """Optimizer and schedule; steps are optimizer steps (after gradient accumulation)."""

    name: Literal["adamw", "adafactor"] = Field(
        "adamw",
        description="adafactor: torch's, with T5's relative step (each update scales with the parameter's RMS); "
        "betas are AdamW's only",
    )
    relative_step: bool = Field(
        True,
        description="adafactor only: false = T5's fine-tuning recipe, each step lr x the normalised update, "
        "not scaled by the parameter's RMS",
    )
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(100, ge=0)
    max_steps: int | None = Field(
        None, gt=0, description="end of the cosine decay; None: the stage uses trainer.max_steps"
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a fraction of the peak")
    schedule: Literal["cosine", "wsd"] = Field(
        "cosine", description="cosine: warmup then cosine decay; wsd: warmup, stable at the peak, linear decay"
    )
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: the last fraction of max_steps that decays")

    def for_run(self, trainer_max_steps: int) -> OptimConfig:
        """This config with the decay length filled in from the trainer when unset."""
        return self if self.max_steps else self.model_copy(update={"max_steps": trainer_max_steps})


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and biases/norms/embeddings without decay."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, _NO_DECAY_MODULES) for p in m.parameters()}
    no_decay |= {id(p) for p in model.parameters() if p.ndim < 2}  # biases, norm gains
    params = [p for p in model.parameters() if p.requires_grad]  # tied weights appear once
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def build_adamw(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)


# torch's Adafactor steps by alpha = max(eps2, RMS(param)) * min(lr, 1/sqrt(t)). With eps2 above
# any parameter's RMS and lr / eps2 below 1/sqrt(t) (t < 1e12 here), alpha = lr: a plain step,
# not scaled by the parameter's RMS. That matters for a fused q/k/v matrix, whose one RMS would
# otherwise set the step of all three.
_FLAT_STEP_EPS2 = 1e3


def build_adafactor(model: nn.Module, lr: float, weight_decay: float, relative_step: bool) -> torch.optim.Adafactor:
    if relative_step:
        return torch.optim.Adafactor(param_groups(model, weight_decay), lr=lr)
    # torch decays weights by lr * weight_decay: scale weight_decay back up by what lr was scaled down
    return torch.optim.Adafactor(
        param_groups(model, weight_decay * _FLAT_STEP_EPS2), lr=lr / _FLAT_STEP_EPS2, eps=(None, _FLAT_STEP_EPS2)
    )


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adafactor":
        return build_adafactor(model, cfg.lr, cfg.weight_decay, cfg.relative_step)
    return build_adamw(model, cfg.lr, cfg.weight_decay, cfg.betas)


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> OptimizerLRSchedulerConfig:
    """What a LightningModule's configure_optimizers returns: the optimizer + the per-step schedule."""
    optimizer = build_optimizer(model, cfg)
    if cfg.max_steps is None:
        raise ValueError("OptimConfig.max_steps is unset; the stage must fill it from trainer.max_steps")
    kwargs = dict(warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps, min_lr_ratio=cfg.min_lr_ratio)
    if cfg.schedule == "wsd":
        kwargs["decay_steps"] = round(cfg.decay_fraction * cfg.max_steps)
    scheduler = build_schedule(optimizer, cfg.schedule, **kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
