"""Serving as a user runs it: `mlflow models serve -m models:/<name>@champion --env-manager local`
on a loopback port, for a classifier and a seq2seq model. `/invocations` answers what `predict`
answers in-process; bad JSON and an empty text get a 4xx whose message ends in one line saying
what is wrong; SIGTERM stops the server and every process it started, and frees the port."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from flows import processes
from llm_pipeline.tracking.client import mlflow_client, tracking_uri
from llm_pipeline.tracking.runs import stage_run
from tests.integration.test_tracking_server_faults import free_port
from tests.unit.model_folders import write_model_folder
from tests.unit.test_inference import texts

# name -> (family, write_model_folder's keywords)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "serve-classifier": ("bert", {"kind": "classification", "labels": ["games", "net", "sound"]}),
    "serve-translator": (
        "t5",
        {"kind": "seq2seq", "fmt": {"input_template": "to {lang}: {input}", "max_source_len": 24}},
    ),
}


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def ping(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
        return response.status == 200


@pytest.fixture
def served(tracking_dir):
    """Both models registered with the champion alias, each served on its own port."""
    servers = {}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for seed, (name, (family, spec)) in enumerate(MODELS.items()):
        folder = write_model_folder(tracking_dir / name, family, seed=seed, **spec)
        with stage_run(f"finetune-{name}") as run:
            version = run.register_model(folder, name)
        assert version is not None
        # the client of the store this test registered in (mlflow's process-wide URI may be another test's)
        mlflow_client().set_registered_model_alias(name, "champion", version)
    try:
        for name in MODELS:
            port = free_port()
            cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", f"models:/{name}@champion"]
            cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
            log = tracking_dir / f"{name}.log"
            servers[name] = (processes.start(cmd, log, env, tracking_dir), f"http://127.0.0.1:{port}", port, log)
        for handle, url, _, log in servers.values():  # started together, so their start-ups overlap
            processes.wait_until(
                functools.partial(ping, url), name="mlflow models serve", where=url, log=log, timeout=120, handle=handle
            )
        yield servers
    finally:
        for handle, *_ in servers.values():
            processes.stop(handle)


def test_served_models_answer_as_in_process_refuse_bad_input_in_one_line_and_stop_cleanly(served):
    import mlflow

    rows = {
        "serve-classifier": pd.DataFrame({"text": texts(5, seed=1)}),
        "serve-translator": pd.DataFrame({"text": texts(3, seed=2), "lang": ["de", "fr", "it"]}),
    }
    mlflow.set_tracking_uri(tracking_uri())  # this test's store, whatever an earlier test set
    for name, (handle, url, port, log) in served.items():
        frame = rows[name]
        want = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(frame)
        status, body = post(f"{url}/invocations", json.dumps({"dataframe_records": frame.to_dict("records")}).encode())
        assert status == 200 and body == {"predictions": want}, (name, status, body)

        status, body = post(f"{url}/invocations", b'{"dataframe_records": [{"text": "a"')  # cut mid-record
        assert 400 <= status < 500, (name, status, body)
        assert "json" in body["message"].lower() and "Traceback" not in body["message"], body

        empty = frame.assign(text=[*frame["text"][:-1], " "])
        status, body = post(f"{url}/invocations", json.dumps({"dataframe_records": empty.to_dict("records")}).encode())
        assert 400 <= status < 500, (name, status, body)
        # MLflow puts the frame it got in front; the last line is ours: the row and what is wrong
        assert body["message"].splitlines()[-1] == (
            f"Error: row {len(frame) - 1}: empty 'text' (1 of {len(frame)} rows); every row needs text"
        ), body
        assert "stack_trace" not in body, body

        members = processes.tree(handle)
        os.killpg(handle.pid, signal.SIGTERM)
        gone, alive = psutil.wait_procs(members, timeout=30)
        assert not alive, f"{name}: {[p.pid for p in alive]} still running 30 s after SIGTERM; see {log}"
        assert not processes.port_in_use(port), f"{name}: port {port} still bound after the server stopped"
