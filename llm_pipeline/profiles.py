"""Profiles: one params overlay that trains another budget on the same data.

A profile (params/profiles/<name>.yaml) names the families it pretrains, the fine-tune runs it
trains and scores, the runs it also trains from random weights (`<run>-scratch`, which prices
pretraining), and `--set`-style overrides of the project's params files:

    families: [gpt, bert]
    runs: [classification-bert, summarization-gpt]
    scratch: [summarization-gpt]
    set:
      pretrain: {families.gpt.trainer.max_steps: 3000}
      finetune: {runs.summarization-gpt.trainer.max_steps: 900}

`resolve` turns a profile and the project's params into the params files the profile runs with:
the same schema as params/*.yaml, checked by each stage's own config, so a profile can set
anything a stage takes. `bench/profile_run.py` trains and scores them beside the project
(`make run PROFILE=<name>`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from llm_pipeline.config import StageConfig, apply_values, build_config, load_params
from llm_pipeline.errors import PipelineError

# the params files a profile can override, and the ones it reads
PROFILE_STAGES = ("pretrain", "finetune", "evaluate")


class Profile(StageConfig):
    families: list[str] = Field(min_length=1)  # keys of params/pretrain.yaml's `families`
    runs: list[str] = Field(min_length=1)  # keys of params/finetune.yaml's `runs` (after `set`)
    scratch: list[str] = []  # of `runs`: also trained from random weights as <run>-scratch
    set: dict[str, dict[str, Any]] = {}  # stage -> {dotted key: value}, as `--set key=value`

    @field_validator("set")
    @classmethod
    def _known_stages(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(value) - set(PROFILE_STAGES))
        if unknown:
            raise ValueError(f"set: {unknown[0]!r} is not a stage a profile sets ({', '.join(PROFILE_STAGES)})")
        return value


def load_profile(path: str | Path) -> Profile:
    return build_config(Profile, load_params(path), source=str(path))


def resolve(profile: Profile, params: dict[str, dict[str, Any]], source: str = "profile") -> dict[str, dict[str, Any]]:
    """The profile's params files: {"pretrain": ..., "finetune": ..., "evaluate": ...}.

    params: the project's params of those stages. Every name the profile uses must exist, each
    run's family must be one the profile pretrains, and every resolved file must load as its
    stage's config (one line naming the profile otherwise).
    """
    resolved = {
        stage: apply_values(params[stage], profile.set.get(stage, {}), source=f"{source}: set.{stage}")
        for stage in PROFILE_STAGES
    }
    families = resolved["pretrain"].get("families") or {}
    runs = resolved["finetune"].get("runs") or {}
    for name in profile.families:
        if name not in families:
            raise PipelineError(f"{source}: families: {name!r} is not in params/pretrain.yaml ({', '.join(families)})")
    for name in profile.runs:
        if name not in runs:
            raise PipelineError(f"{source}: runs: {name!r} is not in params/finetune.yaml ({', '.join(runs)})")
        family = runs[name].get("family")
        if family not in profile.families:
            raise PipelineError(
                f"{source}: run {name!r} fine-tunes {family!r}, which the profile does not pretrain (families: "
                f"{', '.join(profile.families)})"
            )
    for name in profile.scratch:
        if name not in profile.runs:
            raise PipelineError(f"{source}: scratch: {name!r} is not one of the profile's runs")
    resolved["pretrain"]["families"] = {name: families[name] for name in profile.families}
    twins = {f"{name}-scratch": copy.deepcopy(runs[name]) | {"init": "scratch"} for name in profile.scratch}
    resolved["finetune"]["runs"] = {name: runs[name] for name in profile.runs} | twins
    resolved["evaluate"]["families"] = list(profile.families)
    resolved["evaluate"]["runs"] = None  # the resolved finetune params' runs, twins included
    _check_stage_configs(resolved, source)
    return resolved


def _check_stage_configs(resolved: dict[str, dict[str, Any]], source: str) -> None:
    from llm_pipeline.stages.base import config_class  # the stage configs import torch: only here

    for stage, data in resolved.items():
        build_config(config_class(stage), data, source=f"{source} (its {stage} params)")
