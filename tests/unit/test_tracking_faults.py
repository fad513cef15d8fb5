"""Tracking faults (llm_pipeline/tracking/faults.py and its callers): MLflow's exceptions as one
line without the password, bounded HTTP retries, and a stage that fails after registering
leaves its version marked incomplete.
(The real server killed mid-stage: tests/integration/test_tracking_server_faults.py.)"""

from __future__ import annotations

import os

import pytest
from mlflow.exceptions import MlflowException

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import HTTP_RETRY_DEFAULTS, bound_http_retries, tracking_uri
from llm_pipeline.tracking.dead_runs import INCOMPLETE_TAG
from llm_pipeline.tracking.faults import tracking_faults
from llm_pipeline.tracking.runs import Tracker, stage_run
from tests.unit.model_folders import write_model_folder

HTTP_KEYS = tuple(HTTP_RETRY_DEFAULTS)


def test_mlflow_errors_become_one_line_naming_the_uri_without_the_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ann:s3cret@127.0.0.1:5999")
    raw = "API request to http://ann:s3cret@127.0.0.1:5999/api/2.0/mlflow/runs/log-batch failed\nwith " + "x" * 400
    with pytest.raises(PipelineError) as failed, tracking_faults():
        raise MlflowException(raw)
    message = str(failed.value)
    assert message.startswith("MLFLOW_TRACKING_URI http://ann:***@127.0.0.1:5999: a tracking call failed (API request")
    assert "s3cret" not in message and "\n" not in message and "x..." in message
    with pytest.raises(KeyError), tracking_faults():  # not MLflow's: passes through
        raise KeyError("other")


def test_http_retries_are_bounded_on_an_http_uri_only_and_a_set_value_is_kept(monkeypatch):
    for key in HTTP_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x.db")
    bound_http_retries()
    assert not any(key in os.environ for key in HTTP_KEYS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    bound_http_retries()

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


def test_a_stage_failing_after_its_registration_ends_failed_and_marks_the_version_incomplete(tracking_dir):
    from mlflow.tracking import MlflowClient

    folder = write_model_folder(tracking_dir / "gpt", "gpt")
    opened: list[Tracker] = []

    def failing_stage() -> None:
        with stage_run("pretrain-gpt") as run:
            opened.append(run)
            run.register_model(folder, "failing-gpt")
            raise PipelineError("the stage failed after registering")

    with pytest.raises(PipelineError, match="after registering"):
        failing_stage()
    (run,) = opened
    assert run.run_id is not None
    client = MlflowClient(tracking_uri())
    assert client.get_run(run.run_id).info.status == "FAILED"
    (version,) = client.search_model_versions("name='failing-gpt'")
    assert version.tags[INCOMPLETE_TAG] == f"run {run.run_id} ended FAILED (PipelineError)"
