"""The served stack for real: flows/services.py starts PostgreSQL, an MLflow server on it, a Prefect
server, the deployments and a worker on free loopback ports; a run of the on-demand deployment,
triggered through the Prefect API, fine-tunes one task x family in a tiny copy of the project and
its runs and registered models land on the PostgreSQL-backed server; then `stop` leaves nothing.

Kept cheap: one tokenizer, one family, one fine-tuning run of a few steps on a small slice of the
cached corpus, so the run is mostly the stack's own start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from flows import processes
from llm_pipeline import dvc_state
from tests.integration.pipeline_project import (
    REPO,
    SMALL_PARAMS,
    assert_up_to_date,
    copy_project,
    deep_update,
    kill_in_lock_write,
    set_params,
)

pytestmark = pytest.mark.integration
TASK, FAMILY = "classification", "gpt"
RUN = f"{TASK}-{FAMILY}"
FAST = {"max_steps": 10, "val_check_interval": 5, "limit_val_batches": 2, "enable_progress_bar": False}


def keep_only(project: Path, stage: str, key: str, name: str, update: dict) -> None:
    """params/<stage>.yaml's `key` mapping reduced to its entry `name`, merged with `update`."""
    path = project / "params" / f"{stage}.yaml"
    params = yaml.safe_load(path.read_text())
    params[key] = {name: deep_update(params[key][name], update)}
    path.write_text(yaml.safe_dump(params))


def tiny_project(dst: Path) -> Path:
    project = copy_project(dst, files=("prefect.yaml",))
    cache = str(REPO / ".cache" / "sources")
    set_params(project, "fetch", {"refresh": False, "cache_dir": cache})  # the shared download cache, offline
    sources = [{"kind": "debian_descriptions", "max_records": 800}, {"kind": "bible_web", "max_records": 40}]
    set_params(project, "ingest", {"sources": sources})
    tokenizer = yaml.safe_load((project / "params" / "pretrain.yaml").read_text())["families"][FAMILY]["tokenizer"]
    keep_only(project, "tokenize", "tokenizers", tokenizer, {"vocab_size": 512})
    keep_only(project, "pretrain", "families", FAMILY, {"trainer": FAST})
    small_run = SMALL_PARAMS["finetune"]["runs"][RUN] | {"trainer": FAST}
    keep_only(project, "finetune", "runs", RUN, small_run)
    set_params(project, "evaluate", {"families": [FAMILY]})
    return project


def state_dir() -> Path:
    """A state dir PostgreSQL's user can reach when the tests run as root (pytest's tmp dirs are
    mode 700 and root's; the server runs as `postgres`, since it refuses root)."""
    path = Path(tempfile.mkdtemp(prefix="llm-pipeline-served-"))
    path.chmod(0o755)
    return path


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Stack:
    project: Path
    state: Path
    ports: dict[str, int]

    def services(
        self, command: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(self.project / "flows" / "services.py"), command, "--state-dir", str(self.state)]
        cmd += [f"--{name}-port={port}" for name, port in self.ports.items()]
        env = None if env is None else {**os.environ, **env}
        return subprocess.run([*cmd, *args], text=True, capture_output=True, timeout=timeout, env=env)

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    def handles(self) -> dict[str, processes.Handle]:
        services = json.loads((self.state / "services.json").read_text())["services"]
        return {name: processes.Handle(s["pid"], s["create_time"]) for name, s in services.items()}

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.state / "logs" / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.is_file() else f"({path} missing)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ports = dict(zip(("pg", "mlflow", "prefect"), free_ports(3)))
    served = Stack(tiny_project(tmp_path_factory.mktemp("served")), state_dir(), ports)
    started = served.services("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield served
    finally:
        served.services("stop")  # also after a failed start: the test that stops checks it for real
        shutil.rmtree(served.state, ignore_errors=True)


def run_on_demand(stack: Stack, timeout: float = 600):
    """A run of the on-demand deployment through the Prefect API; timeout 0: do not wait for it."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api}):
        # called from sync code it returns the run itself, not the coroutine the type also allows
        run: FlowRun = run_deployment(  # type: ignore[assignment]
            "llm-pipeline-finetune/on-demand", parameters={"task": TASK, "family": FAMILY}, timeout=timeout
        )
    return run


@pytest.fixture(scope="module")
def flow_run(stack):
    run = run_on_demand(stack)
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{stack.log_tail('worker')}"
    return run


def test_start_wrote_an_env_file_pointing_at_the_servers(stack):
    env = (stack.state / "env").read_text().splitlines()
    assert env == [f"export MLFLOW_TRACKING_URI={stack.mlflow_url}", f"export PREFECT_API_URL={stack.prefect_api}"]
    assert set(stack.handles()) == {"postgres", "mlflow", "prefect", "worker"}


def test_a_deployment_run_logs_runs_and_models_to_the_postgres_backed_server(stack, flow_run):
    import psycopg2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_url)
    experiment = client.get_experiment_by_name("llm-pipeline")
    assert experiment is not None
    # the server chose the artifact location: its proxied store, which is the state dir's folder
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    upstream = {"ingest", f"pretrain-{FAMILY}", f"finetune-{RUN}", "evaluate", "report"}
    assert upstream | {f"on-demand-{RUN}"} <= set(runs), sorted(runs)  # dvc repro ran the stale upstream first
    parent = runs[f"on-demand-{RUN}"].info.run_id
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        if name != f"on-demand-{RUN}":
            assert run.data.tags["mlflow.parentRunId"] == parent, name
    assert runs[f"finetune-{RUN}"].data.metrics, "the fine-tune logged no metrics"
    for model in (f"llm-pipeline-{FAMILY}", f"llm-pipeline-{RUN}"):
        [version] = client.search_model_versions(f"name='{model}'")
        assert version.run_id in {r.info.run_id for r in runs.values()}
    assert any((stack.state / "mlartifacts").rglob("MLmodel")), "no model reached the server's artifact store"
    assert not (stack.project / "mlflow.db").exists()  # the worker's stages used the server, not sqlite
    # the backend store really is that PostgreSQL: the rows are in its database
    conn = psycopg2.connect(host="127.0.0.1", port=stack.ports["pg"], user="mlflow", dbname="mlflow")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM registered_models")
            assert {f"llm-pipeline-{FAMILY}", f"llm-pipeline-{RUN}"} <= {row[0] for row in cur.fetchall()}
            cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
            assert cur.fetchone()[0] == len(runs)
    finally:
        conn.close()


def test_a_worker_killed_inside_dvcs_lock_write_is_restarted_and_the_next_run_completes(stack, flow_run, tmp_path):
    """The worst moment for a served worker to die: the fine-tune's params changed, its `dvc repro`
    is writing dvc.lock, and the worker with its flow run and every child is SIGKILLed there (the
    lock is left cut at a seeded byte). `make serve` (services start) restarts only the worker;
    the next run of the deployment then completes with nothing repaired by hand: the flow restored
    dvc.lock from its last whole copy (its log says so) and `dvc status` is clean."""
    set_params(stack.project, "finetune", {"runs": {RUN: {"optim": {"lr": 0.0007}}}})  # the fine-tune reruns
    marker = tmp_path / "killed-in-lock-write"
    hook = kill_in_lock_write(0.41, marker, "repro", tree_of="worker start")
    old_worker = stack.handles()["worker"]
    processes.stop(old_worker, signals=(signal.SIGTERM, signal.SIGINT))
    restarted = stack.services("start", env=hook)  # the worker alone, now carrying the fault
    assert restarted.returncode == 0 and "restarted worker" in restarted.stdout, restarted.stdout + restarted.stderr
    worker = stack.handles()["worker"]

    run_on_demand(stack, timeout=0)
    deadline = time.monotonic() + 300
    while not marker.exists() or worker.process() is not None:
        assert time.monotonic() < deadline, f"the worker was not killed in the lock write\n{stack.log_tail('worker')}"
        time.sleep(0.2)
    assert dvc_state.lock_problem(stack.project) is not None  # torn as the kill left it

    restarted = stack.services("start")  # `make serve` again: only the dead worker is started
    assert restarted.returncode == 0 and "restarted worker" in restarted.stdout, restarted.stdout + restarted.stderr
    assert stack.services("status").returncode == 0  # every service runs
    run = run_on_demand(stack)
    assert run.state is not None and run.state.is_completed(), f"{run.state}\n{stack.log_tail('worker')}"
    assert "recovered: dvc.lock" in (stack.state / "logs" / "worker.log").read_text()
    assert dvc_state.lock_problem(stack.project) is None
    assert_up_to_date(stack.project)


def test_the_prefect_ui_is_told_the_api_of_its_own_port(stack):
    # what the UI's JavaScript fetches first: with the default answer (port 4200) the UI of a
    # server on any other port lists no flow runs ("Can't connect to Server API")
    settings = processes.http_get(stack.prefect_api.removesuffix("/api") + "/ui-settings")
    assert settings["api_url"] == stack.prefect_api and stack.ports["prefect"] != 4200


def test_every_service_listens_on_loopback_only(stack, flow_run):
    trees = [proc for handle in stack.handles().values() for proc in processes.tree(handle)]
    listening = processes.listening(trees)
    assert {port for _host, port in listening} >= set(stack.ports.values())
    assert {host for host, _port in listening} == {"127.0.0.1"}, listening


def test_stop_leaves_no_process_and_no_listening_port(stack, flow_run):
    pids = {proc.pid: proc for handle in stack.handles().values() for proc in processes.tree(handle)}
    assert len(pids) >= 4
    stopped = stack.services("stop")
    assert stopped.returncode == 0, stopped.stderr
    left = [proc for proc in pids.values() if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
    assert not any(processes.port_in_use(port) for port in stack.ports.values())
    assert stack.services("status").stdout.startswith("nothing started")
    assert not (stack.state / "env").exists()


def test_a_service_that_does_not_answer_in_time_is_named_and_nothing_is_left():
    """A start that fails halfway (here MLflow cannot answer within 1 s; PostgreSQL came up before
    it): one line naming the service and its log, and the failed start itself stopped all it started."""
    ports = dict(zip(("pg", "mlflow", "prefect"), free_ports(3)))
    stack = Stack(REPO, state_dir(), ports)
    try:
        started = stack.services("start", "--timeout", "1")
        assert started.returncode == 1
        [line] = started.stderr.strip().splitlines()
        assert "did not answer" in line and "mlflow.log" in line, line
        postgres_log = (stack.state / "logs" / "postgres.log").read_text()
        assert "ready to accept connections" in postgres_log and "database system is shut down" in postgres_log
        assert not (stack.state / "services.json").exists()
        assert not any(processes.port_in_use(port) for port in ports.values())
        ours = [p for p in psutil.process_iter(["cmdline"]) if str(stack.state) in " ".join(p.info["cmdline"] or [])]
        assert not [p for p in ours if p.status() != psutil.STATUS_ZOMBIE]
        assert stack.services("stop").returncode == 0  # and `make stop` after it has nothing to do but succeeds
    finally:
        stack.services("stop")
        shutil.rmtree(stack.state, ignore_errors=True)
