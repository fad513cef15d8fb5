"""The flow's project, built once per test session and shared by every xdist worker.

One flow run on a tiny copy of the project (tests/integration/pipeline_project.py) is the world
the pipeline tests check: test_pipeline.py reads it, test_pipeline_kills.py and
test_pipeline_changes.py each change their own copy of it. The first worker to ask builds it
under a file lock in the run's shared temporary folder; another worker asking meanwhile waits for
it, and a build that failed is reported once, not retried by every worker. tests/conftest.py
orders the collection so the builder runs first and the tests that need a built world last.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest

from tests.integration.pipeline_project import copy_project, mlflow_client_of, run_flow


@pytest.fixture(scope="session")
def flow_world(request, tmp_path_factory, worker_id) -> tuple[Path, dict]:
    """(the project after one flow run, the flow's results), built once for all workers."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "flow-world"  # base.parent: this run's, shared
    root.mkdir(exist_ok=True)
    results, failed = root / "results.json", root / "failed.txt"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the worker dies)
        if failed.exists():
            pytest.fail(f"the flow run every pipeline test needs failed in another worker: {failed.read_text()}")
        if not results.exists():
            try:
                request.getfixturevalue("prefect_harness")
                flow_results = run_flow(copy_project(root / "project"))
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            results.write_text(json.dumps(flow_results))
    return root / "project", json.loads(results.read_text())


@pytest.fixture
def flow_project(flow_world) -> Path:
    """The project the one flow run filled; tests only read it."""
    return flow_world[0]


@pytest.fixture
def flow_result(flow_world) -> dict:
    """What the flow returned: each stage's metrics."""
    return flow_world[1]


@pytest.fixture
def project(flow_project, tmp_path) -> Path:
    """A copy of the flow's project, after its run, for a test that changes it: no test sees what
    another did, whatever their order or worker. (The copied MLflow experiment keeps its artifact
    folder in the flow's project: new artifacts land there, under their own run ids.)"""
    return Path(shutil.copytree(flow_project, tmp_path / "project", symlinks=True))


@pytest.fixture
def mlflow_client(project):
    """MLflow of the test's own copy."""
    return mlflow_client_of(project)


@pytest.fixture
def flow_client(flow_project):
    """MLflow of the flow's project, to read."""
    return mlflow_client_of(flow_project)
