"""What every stage returns, and the one runner that tracks and reports it.

A stage module `llm_pipeline.stages.<name>` defines `<Name>Config` (a StageConfig) and
`run(cfg, tracker) -> StageResult`. The CLI, `dvc repro` (through the CLI) and the Prefect
flow (through `dvc repro`) all end up in `execute`, so nothing is written twice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_pipeline.config import PerItemConfig, StageConfig
from llm_pipeline.io import MANIFEST_NAME, write_json
from llm_pipeline.tracking.client import is_global_rank_zero
from llm_pipeline.tracking.runs import stage_run

STAGES = ("fetch", "ingest", "tokenize", "pretrain", "finetune", "evaluate", "report")
# stage -> the mapping whose keys its `item` selects (its config's ITEMS; here so the CLI can
# offer the positional ITEM without importing the stage modules; a test keeps the two equal)
PER_ITEM_STAGES = {"tokenize": "tokenizers", "pretrain": "families", "finetune": "runs"}
REPORTS_DIR = Path("reports")


@dataclass
class StageResult:
    metrics: dict[str, float]  # flat numbers -> MLflow + reports/<run>.json
    report: dict[str, Any] = field(default_factory=dict)  # anything else worth reading
    artifacts: list[Path] = field(default_factory=list)  # files/dirs logged to the run


def stage_module(stage: str):
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    return importlib.import_module(f"llm_pipeline.stages.{stage}")


def config_class(stage: str) -> type[StageConfig]:
    return getattr(stage_module(stage), f"{stage.capitalize()}Config")


def run_name(stage: str, cfg: StageConfig) -> str:
    """MLflow run name and report file stem: the stage, plus the item of a per-item stage
    (finetune's run, tokenize's tokenizer, pretrain's family) -- dvc.yaml's `<stage>@<item>` reports."""
    item = cfg.item if isinstance(cfg, PerItemConfig) else None
    return f"{stage}-{item}" if item else stage


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def execute(stage: str, cfg: StageConfig) -> StageResult:
    """Run one stage inside its MLflow run; write reports/<run>.json."""
    module = stage_module(stage)
    name = run_name(stage, cfg)
    with stage_run(name) as tracker:
        tracker.log_params(flatten(cfg.model_dump(mode="json")))
        result: StageResult = module.run(cfg, tracker)
        report_path = REPORTS_DIR / f"{name}.json"
        if is_global_rank_zero():
            write_json(
                report_path,
                {"stage": name, "mlflow_run_id": tracker.run_id, "metrics": result.metrics, **result.report},
            )
        tracker.log_metrics(result.metrics)
        tracker.log_datasets([p for p in result.artifacts if p.name == MANIFEST_NAME], context=stage)
        for path in [*result.artifacts, report_path]:
            tracker.log_artifact(path)
    return result
