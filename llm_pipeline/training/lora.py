"""LoRA fine-tuning: low-rank adapters on a frozen model's Linear layers (`method: lora`).

Each targeted `nn.Linear` (weight W, out x in) is wrapped in a `LoraLinear` that adds
(alpha / rank) * B @ A, with A (rank x in) and B (out x rank) the only new parameters; B starts
at zero, so an adapted model starts out computing exactly what the base model did.

Our own wrapper, not `peft` (0.21.2 installs beside the pinned stack and works on plain modules
through `inject_adapter_in_model`), because:
- T5's cross-attention does not call its fused `c_attn`: it splits `c_attn.weight` and runs
  `F.linear` on the slices (models/attention.py, `Attention._project`). peft's layer hands out the
  base weight there, so its cross-attention adapters are silently ignored (measured: zeroing them
  changes the decoder output by 0.0). `LoraLinear.weight` is the adapted weight W + s * B @ A,
  so that path trains and merges like every other;
- peft requires `transformers` (a test-only dependency here) and `accelerate`, and importing it
  costs ~6 s on these CPUs; what we need fits in this one short module;
- merging must give back our own classes (checkpoints and save code expect them), which with
  peft outside a `PeftModel` is a module swap of our own anyway.

Usage::

    model = apply_lora(model, LoraConfig(rank=8), trainable=("head",))  # freeze + adapt
    ...train...
    torch.save(lora_state_dict(model), "adapter.pt")  # small: adapters (+ `trainable`) only
    merged = merge_lora(model)  # in place: plain nn.Linear layers again, adapters folded in

An adapter file loads back into a fresh `apply_lora(...)` of the same base with
`model.load_state_dict(adapter, strict=False)` (its keys are the model's own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, field_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError

__all__ = ["LoraConfig", "LoraLinear", "apply_lora", "count_parameters", "lora_state_dict", "merge_lora"]

# the Linear layers of the shared Block: Attention's fused q/k/v (self- and cross-attention) and
# output projection, the MLP's input (both SwiGLU halves) and output; no head (lm_head, pooler, ...)
DEFAULT_TARGET_MODULES = ("c_attn", "c_proj", "c_fc")

M = TypeVar("M", bound=nn.Module)  # apply_lora/merge_lora hand back the model they were given, same type

_STATE_ATTR = "_lora_state"  # set on the model by apply_lora, removed by merge_lora


class LoraConfig(StageConfig):
    rank: int = Field(8, gt=0, description="rank r of each adapter B @ A")
    alpha: float = Field(16.0, gt=0, description="the adapter's update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (training only)")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        description=(
            "Linear modules to adapt: each pattern matches a module whose qualified name ends with it, "
            "compared dot-separated part by part with shell wildcards (c_attn, mlp.c_proj, h.0.attn.*)"
        ),
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or any(not part for part in pattern.split(".")):
                raise ValueError(f"{pattern!r} is not a module name pattern (e.g. c_attn, mlp.c_proj)")
        return value


class LoraLinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: y = base(x) + s * B(A(dropout(x))), s = alpha/rank.

    `weight` and `bias` read like a Linear's: the adapted weight W + s * B @ A (differentiable in
    A and B) and the base bias, for code that uses a layer's weight directly rather than calling it.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.scaling = rank, alpha / rank
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init
        self.lora_dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """s * B @ A (out, in), computed in fp32."""
        return self.scaling * (self.lora_B.float() @ self.lora_A.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)  # (..., out)
        return self.base(x) + self.scaling * update

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}"


@dataclass(frozen=True)
class _LoraState:
    trainable: tuple[str, ...]  # parameter-name prefixes trained beside the adapters
    frozen_before: frozenset[str]  # parameters that were already frozen before apply_lora


def _matches(name: str, pattern: str) -> bool:
    """Whether the dotted `pattern` matches the last parts of the qualified module name `name`."""
    parts, want = name.split("."), pattern.split(".")
    return len(want) <= len(parts) and all(fnmatchcase(p, w) for p, w in zip(parts[-len(want) :], want))


def _has_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _model_name(model: nn.Module) -> str:
    backbone = getattr(model, "backbone", None)
    kind = type(model).__name__
    return f"{kind}({type(backbone).__name__})" if isinstance(backbone, nn.Module) else kind


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_lora(model: M, cfg: LoraConfig, trainable: Sequence[str] = ()) -> M:
    """Freeze every parameter of `model`, wrap each Linear that `cfg.target_modules` matches in a
    `LoraLinear`, and keep the parameters under the `trainable` name prefixes (e.g. "head" of a
    SequenceClassifier) trainable. Changes `model` in place and returns it.

    Raises PipelineError (one line) when a target matches no Linear module, a `trainable` prefix
    matches no parameter, a target's weight is tied to another module (its merge would change
    both), or the model already has adapters.
    """
    if hasattr(model, _STATE_ATTR) or any(isinstance(m, LoraLinear) for m in model.modules()):
        raise PipelineError(f"lora: {_model_name(model)} already has LoRA adapters; merge_lora it first")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    leaf_names = ", ".join(dict.fromkeys(name.rpartition(".")[2] for name in linears))
    targets: dict[str, nn.Linear] = {}
    for pattern in cfg.target_modules:
        matched = {name: m for name, m in linears.items() if _matches(name, pattern)}
        if not matched:
            raise PipelineError(
                f"lora.target_modules: {pattern!r} matches no Linear module of {_model_name(model)} "
                f"(its Linear modules: {leaf_names})"
            )
        targets.update(matched)

    all_params = list(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    owners: dict[int, list[str]] = {}
    for name, p in all_params:
        owners.setdefault(id(p), []).append(name)
    for name, linear in targets.items():
        others = [n for n in owners[id(linear.weight)] if n != f"{name}.weight"]
        if others:
            raise PipelineError(
                f"lora.target_modules: {name} shares its weight with {others[0].removesuffix('.weight')}; "
                "an adapter on a tied weight cannot be merged, leave it out"
            )
    for prefix in trainable:
        if not any(_has_prefix(name, prefix) for name, _ in all_params):
            tops = ", ".join(name for name, _ in model.named_children())
            raise PipelineError(
                f"lora trainable: {prefix!r} matches no parameter of {_model_name(model)} (its modules: {tops})"
            )

    frozen_before = frozenset(name for name, p in all_params if not p.requires_grad)
    train = {id(p) for name, p in all_params if any(_has_prefix(name, prefix) for prefix in trainable)}
    for _, p in all_params:
        p.requires_grad_(id(p) in train)  # by tensor: a tied weight is trained if any of its names is
    for name, linear in targets.items():
        _set_submodule(model, name, LoraLinear(linear, cfg.rank, cfg.alpha, cfg.dropout))
    setattr(model, _STATE_ATTR, _LoraState(tuple(trainable), frozen_before))
    return model


def merge_lora(model: M) -> M:
    """Fold each adapter into its base weight (W += s * B @ A) and put the plain `nn.Linear` back,
    in place: the result has the original classes and state_dict keys. Parameters get back the
    requires_grad they had before `apply_lora`. A model without adapters is returned unchanged."""
    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLinear)]
    with torch.no_grad():
        for name, lora in adapted:
            w = lora.base.weight
            w.copy_((w.float() + lora.delta_weight()).to(w.dtype))
            _set_submodule(model, name, lora.base)
    state = getattr(model, _STATE_ATTR, None)
    if state is not None:
        for name, p in model.named_parameters(remove_duplicate=False):
            p.requires_grad_(name not in state.frozen_before)
        delattr(model, _STATE_ATTR)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors (every lora_A, lora_B) and those under the `trainable` prefixes given to
    `apply_lora`, keyed by the model's own state_dict names: the small file a LoRA run saves."""
    state = getattr(model, _STATE_ATTR, None)
    if state is None:
        raise PipelineError(f"lora: {_model_name(model)} has no LoRA adapters (apply_lora it first)")
    adapter_keys = {
        f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, LoraLinear) for p in ("lora_A", "lora_B")
    }
    return {
        key: tensor.detach()
        for key, tensor in model.state_dict().items()
        if key in adapter_keys or any(_has_prefix(key, prefix) for prefix in state.trainable)
    }


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"trainable": .., "total": ..} parameter counts (a tied weight counts once)."""
    params = list(model.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
