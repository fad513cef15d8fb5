"""A password in MLFLOW_TRACKING_URI never reaches a stage's output, reports or MLflow run.

A real `mlflow server` (sqlite backend, loopback, a free port) is reached through
http://user:<password>@127.0.0.1:<port>; the ingest stage CLI runs against it (a tiny local
corpus), then its stdout/stderr, reports/*.json, manifest, and its run's params and tags are
searched for the password. The same for the one-line error of a model URI that cannot be loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows import processes
from tests.conftest import make_documents
from tests.integration.test_tracking_server_faults import free_port, start_server

pytestmark = pytest.mark.integration

PASSWORD = "s3cretPw9"


def stage_env(uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LLM_PIPELINE_"))}
    return env | {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def run(args: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "llm_pipeline.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=stage_env(uri), capture_output=True, text=True, timeout=300)


def test_a_password_in_the_tracking_uri_appears_nowhere(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": t}) for t in make_documents(60, seed=4)))
    params = tmp_path / "ingest.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "work" / "ingest"),
                "cache_dir": str(tmp_path / "cache"),
                "progress": False,
                "sources": [{"kind": "jsonl", "path": str(docs)}],
                "dedup": {"near": False},
                "split": {"val_fraction": 0.2, "test_fraction": 0.2},
                "tasks": {t: {"enabled": False} for t in ("qa", "nsp", "generation")},
            }
        )
    )
    port = free_port()
    plain = f"http://127.0.0.1:{port}"
    secret = f"http://pipeline:{PASSWORD}@127.0.0.1:{port}"
    (tmp_path / "server").mkdir()
    server = start_server(tmp_path / "server", port)
    try:
        done = run(["ingest", "--params", str(params)], tmp_path / "work", secret)
        assert done.returncode == 0, done.stderr[-3000:]
        assert PASSWORD not in done.stdout + done.stderr

        written = [p for p in (tmp_path / "work").rglob("*.json")]
        assert any(p.name == "ingest.json" for p in written), written  # reports/ingest.json
        for path in written:
            assert PASSWORD not in path.read_text(), path

        client = MlflowClient(plain)
        (exp,) = [e for e in client.search_experiments() if e.name == "llm-pipeline"]
        (stage_run,) = client.search_runs([exp.experiment_id])
        assert stage_run.info.status == "FINISHED" and stage_run.data.params  # params were logged
        for key, value in {**stage_run.data.params, **stage_run.data.tags}.items():
            assert PASSWORD not in f"{key}={value}", key

        # a model that cannot be loaded from it: the one-line error names the URI, redacted
        missing = run(["generate", "--model", "models:/nope/1", "--prompt", "x"], tmp_path / "work", secret)
        assert missing.returncode == 2, missing.stderr[-3000:]
        assert PASSWORD not in missing.stdout + missing.stderr, missing.stderr[-2000:]
        assert "pipeline:***@127.0.0.1" in missing.stderr.strip().splitlines()[-1], missing.stderr[-2000:]
    finally:
        processes.stop(server)
