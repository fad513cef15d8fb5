"""prefect.yaml declares a nightly deployment of the pipeline flow and an on-demand fine-tune."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cronsim import CronSim

REPO = Path(__file__).resolve().parents[2]


def deployments() -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}


def test_deployment_points_at_the_flow_on_a_nightly_cron():
    from prefect.flows import Flow, load_flow_from_entrypoint

    deployment = deployments()["nightly"]
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


def test_on_demand_deployment_takes_task_and_family_and_has_no_schedule():
    from prefect.flows import Flow, load_flow_from_entrypoint

    assert set(deployments()) == {"nightly", "on-demand"}
    deployment = deployments()["on-demand"]
    flow: Flow[..., Any] = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    assert flow.name == "llm-pipeline-finetune"
    schema = flow.parameters
    assert {"task", "family"} <= set(schema.required or [])  # a run must name both
    assert set(deployment["parameters"]) <= set(schema.properties)
    assert not deployment.get("schedules")
    assert deployment["work_pool"]["name"] == deployments()["nightly"]["work_pool"]["name"]  # one worker serves both


def test_on_demand_refuses_a_run_the_matrix_lacks_naming_those_it_has(tmp_path):
    from flows.on_demand import run_name
    from llm_pipeline.errors import PipelineError

    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "finetune.yaml").write_text(
        "runs:\n  qa-t5: {task: qa, family: t5}\n  classification-bert: {task: classification, family: bert}\n"
    )
    assert run_name(str(tmp_path), "qa", "t5") == "qa-t5"
    with pytest.raises(PipelineError) as info:
        run_name(str(tmp_path), "qa", "bert")
    message = str(info.value)
    assert "finetune.yaml" in message and "'qa-bert'" in message and "qa-t5, classification-bert" in message
    assert "\n" not in message


def test_force_names_stages_or_foreach_groups_and_refuses_others_in_one_line(tmp_path):
    from flows.pipeline import forced_stages, pipeline_stages
    from llm_pipeline.errors import PipelineError

    (tmp_path / "params").mkdir()
    for stage, key, items in (
        ("tokenize", "tokenizers", ["bpe", "unigram"]),
        ("pretrain", "families", ["gpt"]),
        ("finetune", "runs", ["qa-t5"]),
    ):
        (tmp_path / "params" / f"{stage}.yaml").write_text(yaml.safe_dump({key: {item: {} for item in items}}))
    stages = pipeline_stages(str(tmp_path))
    assert stages == [
        "fetch",
        "ingest",
        "tokenize@bpe",
        "tokenize@unigram",
        "pretrain@gpt",
        "finetune@qa-t5",
        "evaluate",
        "report",
    ]
    assert forced_stages(stages, True) == set(stages)
    assert forced_stages(stages, False) == set()
    assert forced_stages(stages, ["evaluate", "tokenize"]) == {"evaluate", "tokenize@bpe", "tokenize@unigram"}
    assert forced_stages(stages, ["tokenize@unigram"]) == {"tokenize@unigram"}
    with pytest.raises(PipelineError, match=r"^--force tokenize@wordpiece: no such stage; the flow runs fetch, ") as e:
        forced_stages(stages, ["evaluate", "tokenize@wordpiece"])
    assert "\n" not in str(e.value)


def test_after_fetch_the_flow_starts_from_the_first_stale_or_forced_stage():
    from flows.pipeline import first_to_start

    after = ["ingest", "tokenize@bpe", "pretrain@gpt", "evaluate", "report"]
    assert first_to_start(after, set(), set()) == len(after)  # unchanged nightly: nothing starts
    assert first_to_start(after, {"fetch"}, set()) == len(after)  # fetch is always "changed"
    assert first_to_start(after, {"pretrain@gpt"}, set()) == 2
    assert first_to_start(after, {"evaluate"}, {"tokenize@bpe"}) == 1
    assert first_to_start(after, {"ingest", "report"}, set()) == 0
