"""Tracking faults injected for real on a tiny pretraining run through the stage CLI.

- SIGKILL the stage right after its MLflow run opened (sqlite store): the run is left RUNNING;
  the rerun completes, marks it KILLED with its successor's id, and finishes its own run.
- SIGKILL a real `mlflow server` while the stage runs (polled: as soon as the run is open): the
  stage fails in one line naming the URI, no traceback; the server restarted on the same port and
  database, the rerun completes the registry (a version from a FINISHED run, lineage tags on it)
  and marks the earlier run KILLED.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows import processes
from llm_pipeline.tracking.client import DEFAULT_EXPERIMENT
from llm_pipeline.tracking.dead_runs import INCOMPLETE_TAG, KILLED_REASON_TAG, REPLACED_TAG, SUCCESSOR_TAG
from tests.conftest import write_fake_bpe_shards

TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "max_steps": 8,
    "val_check_interval": 4,
    "checkpoint_every_n_steps": 4,
    "limit_val_batches": 1,
    "log_every_n_steps": 1,
    "enable_progress_bar": False,
}
GPT = {
    "tokenizer": "bpe",
    "model": {"preset": "tiny", "overrides": {"block_size": 32}},
    "data": {"batch_size": 8, "samples_per_epoch": 64},
    "optim": {"lr": 0.01, "warmup_steps": 2},
    "trainer": TRAINER,
    "register_as": "faults-gpt",
}
RUN_NAME = "pretrain-gpt"


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    ingest = write_fake_bpe_shards(root)
    path = root / "pretrain.yaml"
    path.write_text(
        yaml.safe_dump(
            {"families": {"gpt": GPT}, "tokenize_root": str(root / "tok"), "tasks_dir": str(ingest / "tasks")}
        )
    )
    return path


def command(params: Path, out: Path) -> list[str]:
    sets = {"item": "gpt", "output_dir": out / "model", "checkpoint_root": out / "ckpt", "plots_dir": out / "plots"}
    args = [sys.executable, "-m", "llm_pipeline.cli", "pretrain", "--params", str(params)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def environment(uri: str, artifacts: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LLM_PIPELINE_"))}
    env |= {"MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    if artifacts is not None:
        env["LLM_PIPELINE_ARTIFACT_ROOT"] = str(artifacts)
    return env


def start_stage(params: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)  # the stage writes reports/ under its working directory
    return subprocess.Popen(command(params, out), cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_to_end(params: Path, out: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command(params, out), cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def wait_for_open_run(client: MlflowClient, process: subprocess.Popen) -> str:
    """Poll the store until the stage's run is RUNNING; its id."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the stage ended before the fault: {process.communicate()[1][-2000:]!r}"
        exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
        runs = [] if exp is None else client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        if runs:
            (run,) = runs
            return run.info.run_id
        time.sleep(0.05)
    raise AssertionError("the stage opened no run within 120 s")


def assert_replaced(client: MlflowClient, killed: str) -> str:
    """The killed run is KILLED, naming a FINISHED successor that registered a complete version."""
    dead = client.get_run(killed)
    assert dead.info.status == "KILLED", dead.info
    successor = client.get_run(dead.data.tags[SUCCESSOR_TAG])
    assert successor.info.status == "FINISHED" and successor.info.run_name == RUN_NAME
    assert successor.data.tags[REPLACED_TAG] == killed
    (version,) = client.search_model_versions("name='faults-gpt'")
    assert version.run_id == successor.info.run_id and version.status == "READY"
    assert version.tags["tokenizer_sha256"] == successor.data.tags["tokenizer_sha256"]  # lineage copied on
    assert INCOMPLETE_TAG not in version.tags
    return successor.info.run_id


def test_a_sigkilled_stage_leaves_no_running_run_after_its_rerun(params, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = environment(uri, tmp_path / "mlartifacts")
    client = MlflowClient(uri)
    client.search_experiments()  # the database and its schema exist before the stage and this test share it
    process = start_stage(params, tmp_path / "out", env)
    killed = wait_for_open_run(client, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert client.get_run(killed).info.status == "RUNNING"  # the zombie the rerun must clear

    run_to_end(params, tmp_path / "out", env)
    assert_replaced(client, killed)
    assert "its process" in client.get_run(killed).data.tags[KILLED_REASON_TAG]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(root: Path, port: int) -> processes.Handle:
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow, "server", "--backend-store-uri", f"sqlite:///{root / 'm.db'}"]
    cmd += ["--artifacts-destination", str(root / "a"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    handle = processes.start(cmd, root / "server.log", env, root)
    url = f"http://127.0.0.1:{port}"
    try:
        processes.wait_until(
            lambda: processes.http_get(f"{url}/health") == "OK",
            name="mlflow server",
            where=url,
            log=root / "server.log",
            timeout=60,
            handle=handle,
        )
    except processes.ServiceError:
        processes.stop(handle)
        raise
    return handle


def test_a_tracking_server_killed_mid_stage_fails_it_in_one_line_and_the_rerun_completes_the_registry(params, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = environment(uri)
    client = MlflowClient(uri)
    server = start_server(tmp_path, port)
    try:
        process = start_stage(params, tmp_path / "out", env)
        killed = wait_for_open_run(client, process)
        processes.stop(server, signals=())  # SIGKILL to the server's whole process group
        _, stderr = process.communicate(timeout=240)
        lines = stderr.decode().strip().splitlines()
        assert process.returncode == 2, lines[-20:]
        assert lines[-1].startswith(f"llm-pipeline pretrain: error: MLFLOW_TRACKING_URI {uri}: a tracking call failed")
        assert "rerun once the tracking server answers" in lines[-1]
        assert not any("Traceback" in line for line in lines), lines[-20:]

        server = start_server(tmp_path, port)  # the same port and database
        assert client.get_run(killed).info.status == "RUNNING"  # it could not say it failed
        run_to_end(params, tmp_path / "out", env)
        assert_replaced(client, killed)
    finally:
        processes.stop(server)
