"""MLflow tracking: stage runs nest under the pipeline run; registered models load back."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from llm_pipeline.inference import build_options, load_model_folder, predict
from llm_pipeline.tracking.client import PARENT_RUN_ENV, check_reachable, enabled
from llm_pipeline.tracking.registry import load_registered_model, registered_versions
from llm_pipeline.tracking.runs import end_pipeline_run, search_runs, stage_run, start_pipeline_run
from tests.unit.model_folders import write_model_folder


def test_stage_runs_nest_under_the_pipeline_run(tracking_dir, monkeypatch):
    parent = start_pipeline_run("pipeline")
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    with stage_run("tokenize") as run:
        run.log_params({"vocab_size": 100})
        metrics: dict[str, Any] = {"tokens/train": 12, "note": "not a number"}  # a non-number, on purpose
        run.log_metrics(metrics)
    end_pipeline_run(parent, metrics={"tokenize/tokens/train": 12})

    runs = {r.info.run_name: r for r in search_runs()}
    assert set(runs) == {"pipeline", "tokenize"}
    child = runs["tokenize"]
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.tags["pipeline.stage"] == "tokenize"
    assert child.data.params == {"vocab_size": "100"}
    assert child.data.metrics == {"tokens/train": 12.0}
    assert runs["pipeline"].info.status == "FINISHED"


def test_registered_model_loads_back_as_a_pyfunc_and_takes_any_length(tracking_dir):
    folder = write_model_folder(tracking_dir / "gpt", "gpt", block_size=64)
    with stage_run("pretrain") as run:
        version = run.register_model(folder, "test-gpt", description="tiny")
    assert version == "1"
    assert [str(v.version) for v in registered_versions("test-gpt")] == ["1"]
    loaded = load_registered_model("test-gpt", 1)
    local = load_model_folder(folder)
    for words in (1, 8):  # a short prompt and one near the 64-token window (8 x 7 tokens)
        rows = pd.DataFrame({"text": [" ".join(["the package"] * words), "a library"]})
        options = build_options({"max_new_tokens": 5})
        assert loaded.predict(rows, params={"max_new_tokens": 5}) == predict(local, rows, options)


def test_tracking_off_is_a_no_op(tracking_dir, monkeypatch):
    monkeypatch.setenv("LLM_PIPELINE_TRACKING", "off")
    with stage_run("ingest") as run:
        run.log_metrics({"a": 1})
        assert run.lightning_logger() is None and run.register_model(None, "x") is None
    assert start_pipeline_run("pipeline") is None


def test_non_zero_ranks_do_not_track(tracking_dir, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not enabled()
    with stage_run("pretrain") as run:
        assert not run.active


def test_an_unreachable_tracking_server_fails_fast_in_one_line_without_the_password(monkeypatch, tmp_path):
    import socket

    from llm_pipeline.errors import PipelineError

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ann:s3cret@127.0.0.1:{port}")
    monkeypatch.delenv("LLM_PIPELINE_TRACKING", raising=False)
    check_reachable.cache_clear()
    with pytest.raises(PipelineError) as failed, stage_run("fetch"):
        raise AssertionError("the stage body must not start")
    message = str(failed.value)
    assert f"http://ann:***@127.0.0.1:{port}: the tracking server does not answer" in message
    assert "s3cret" not in message and "\n" not in message
