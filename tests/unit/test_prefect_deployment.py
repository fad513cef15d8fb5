"""prefect.yaml declares a nightly deployment whose entrypoint is the pipeline flow."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cronsim import CronSim

REPO = Path(__file__).resolve().parents[2]


def test_deployment_points_at_the_flow_on_a_nightly_cron():
    from prefect.flows import Flow, load_flow_from_entrypoint

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    [deployment] = config["deployments"]
    flow: Flow[..., Any] = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    assert flow.name == "llm-pipeline"
    assert set(deployment["parameters"]) <= set(flow.parameters.properties)
    [schedule] = deployment["schedules"]
    fires = CronSim(schedule["cron"], datetime(2026, 1, 1))
    first, second = next(fires), next(fires)
    assert (second - first).total_seconds() == 24 * 3600  # once a night
    assert deployment["work_pool"]["name"] == "llm-pipeline"


def test_flow_runs_finetune_for_every_run_of_the_matrix(tmp_path):
    from flows.pipeline import finetune_runs

    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "finetune.yaml").write_text(
        "runs:\n  qa-t5: {task: qa, family: t5}\n  classification-bert: {task: classification, family: bert}\n"
    )
    assert finetune_runs(str(tmp_path)) == ["qa-t5", "classification-bert"]
