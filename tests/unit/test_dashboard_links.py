"""The deep links `make ui` and `make run` print: the experiment's Training runs page, the models."""

from __future__ import annotations

import random

from llm_pipeline import dashboard_links as links
from llm_pipeline.tracking.client import experiment_id, tracking_uri


def test_no_store_yet_gives_the_models_page_only_and_creates_nothing(tracking_dir, capsys):
    assert links.main(["--base", "http://127.0.0.1:5311/"]) == 0
    out = capsys.readouterr().out
    assert "`make run` first" in out and "http://127.0.0.1:5311/#/models" in out and "/runs" not in out
    assert not (tracking_dir / "mlflow.db").exists()


def test_the_runs_link_names_the_project_experiment(tracking_dir, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri())  # not mlflow's process-wide URI: another test may set it
    others = [client.create_experiment(name) for name in random.Random(5).sample("abcd", 3)]  # ids differ
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    wanted = experiment_id()
    port = random.Random(9).randint(1024, 65535)
    assert links.main(["--base", f"http://127.0.0.1:{port}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"Training runs:      http://127.0.0.1:{port}/#/experiments/{wanted}/runs",
        f"Registered models:  http://127.0.0.1:{port}/#/models",
    ]
    assert wanted not in others
