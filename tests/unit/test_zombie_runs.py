"""No zombie runs: a run whose process died is marked KILLED by the next run of its name.

The liveness rule on its own (a live pid with another start time is dead; another host's run is
left alone until it is older than the configured age), then a real process SIGKILLed inside its
pipeline run and stage run, after registering a model version, and the runs that follow it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import PARENT_RUN_ENV, tracking_uri
from llm_pipeline.tracking.dead_runs import (
    FOREIGN_MAX_AGE_ENV,
    INCOMPLETE_TAG,
    KILLED_REASON_TAG,
    OWNER_HOST,
    OWNER_PID,
    OWNER_START,
    REPLACED_TAG,
    SUCCESSOR_TAG,
    owner_gone,
    owner_tags,
)
from llm_pipeline.tracking.runs import end_pipeline_run, stage_run, start_pipeline_run

HOST = "this-host"


def exited_pid() -> int:
    """The pid of a process that ran and exited (and was reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def owner(host: str, pid: int, start: float) -> dict[str, str]:
    return {OWNER_HOST: host, OWNER_PID: str(pid), OWNER_START: f"{start:.2f}"}


def test_the_liveness_rule(monkeypatch):
    monkeypatch.delenv(FOREIGN_MAX_AGE_ENV, raising=False)
    now = time.time()
    fresh_ms, week_ms = int(now * 1000) - 60_000, int((now - 8 * 24 * 3600) * 1000)
    me = owner_tags()
    assert me[OWNER_PID] == str(os.getpid())
    started = float(me[OWNER_START])
    mine = {**me, OWNER_HOST: HOST}

    def gone(tags: dict[str, str], started_ms: int = fresh_ms) -> str | None:
        return owner_gone(tags, started_ms, host=HOST, now_s=now)

    assert gone(mine) is None  # this very process: alive
    assert gone(mine, week_ms) is None  # alive however old
    # a live pid with another start time is another process (the pid was reused): dead
    assert gone(owner(HOST, os.getpid(), started - 10)) == f"its process {os.getpid()} on {HOST} is gone"
    dead = exited_pid()
    assert gone(owner(HOST, dead, started)) == f"its process {dead} on {HOST} is gone"
    # another host: its pids say nothing here; left alone until older than the limit (168 h)
    assert gone(owner("elsewhere", dead, started)) is None
    assert gone(owner("elsewhere", dead, started), week_ms) == (
        f"opened 192 h ago on elsewhere (over {FOREIGN_MAX_AGE_ENV}=168)"
    )
    assert "with no owner tags" in (gone({}, week_ms) or "")  # a run from before the tags existed
    assert gone({}) is None
    monkeypatch.setenv(FOREIGN_MAX_AGE_ENV, "0")  # never
    assert gone(owner("elsewhere", dead, started), week_ms) is None
    monkeypatch.setenv(FOREIGN_MAX_AGE_ENV, "1")
    assert gone(owner("elsewhere", dead, started), fresh_ms) is None
    assert gone(owner("elsewhere", dead, started), int((now - 7200) * 1000)) is not None
    monkeypatch.setenv(FOREIGN_MAX_AGE_ENV, "a day")
    with pytest.raises(PipelineError, match=f"{FOREIGN_MAX_AGE_ENV}='a day': not a number of hours"):
        gone(owner("elsewhere", dead, started))


# Opens the pipeline run and a stage run under it, registers a model version, then SIGKILLs itself.
KILLED_MID_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from llm_pipeline.tracking.client import PARENT_RUN_ENV
    from llm_pipeline.tracking.runs import stage_run, start_pipeline_run
    from tests.unit.model_folders import write_model_folder

    parent = start_pipeline_run("pipeline")
    os.environ[PARENT_RUN_ENV] = parent
    with stage_run("pretrain-gpt") as run:
        run.register_model(write_model_folder(Path(sys.argv[1]), "gpt"), "zombie-gpt")
        print(parent, run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.slow  # a subprocess that opens MLflow runs and is SIGKILLed
def test_the_next_run_marks_killed_the_runs_of_a_sigkilled_process(tracking_dir, monkeypatch):
    from mlflow.tracking import MlflowClient

    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_RUN, str(tracking_dir / "model")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    old_parent, old_stage = killed.stdout.split()
    client = MlflowClient(tracking_uri())
    assert client.get_run(old_stage).info.status == "RUNNING"  # the zombie the next runs must clear
    assert client.get_run(old_parent).info.status == "RUNNING"
    # a RUNNING run of the same name from another host, opened a minute ago: not ours to judge
    foreign = client.create_run(
        client.get_run(old_stage).info.experiment_id,
        run_name="pretrain-gpt",
        tags=owner("another-host", os.getpid(), 0.0),
    )

    parent = start_pipeline_run("pipeline")
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    with stage_run("pretrain-gpt") as run:
        run.log_metrics({"train/loss": 1.0})
    end_pipeline_run(parent)
    assert parent is not None and run.run_id is not None

    for old, new in ((old_parent, parent), (old_stage, run.run_id)):
        dead, successor = client.get_run(old), client.get_run(new)
        assert dead.info.status == "KILLED"
        assert dead.data.tags[SUCCESSOR_TAG] == new
        assert dead.data.tags[KILLED_REASON_TAG].startswith("its process ")
        assert successor.info.status == "FINISHED"
        assert successor.data.tags[REPLACED_TAG] == old
    assert client.get_run(foreign.info.run_id).info.status == "RUNNING"
    (version,) = client.search_model_versions("name='zombie-gpt'")
    assert version.run_id == old_stage
    assert f"superseded by run {run.run_id}" in version.tags[INCOMPLETE_TAG]
    # a later run finds nothing left to replace
    with stage_run("pretrain-gpt") as again:
        assert again.run_id is not None
    assert REPLACED_TAG not in client.get_run(again.run_id).data.tags
