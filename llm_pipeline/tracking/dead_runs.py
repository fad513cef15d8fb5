"""Runs whose process died: each run carries its owner (host, pid, process start time); opening
a run marks KILLED the earlier RUNNING runs of its name whose owner is gone."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import run_tags

OWNER_HOST, OWNER_PID, OWNER_START = "pipeline.owner.host", "pipeline.owner.pid", "pipeline.owner.start_time"
SUCCESSOR_TAG = "pipeline.successor_run_id"  # on a run marked KILLED: the run that replaced it
KILLED_REASON_TAG = "pipeline.killed_reason"
REPLACED_TAG = "pipeline.replaced_run_ids"  # on the new run: the runs it marked KILLED, comma-separated
INCOMPLETE_TAG = "pipeline.incomplete"  # on a model version registered by a run that never finished
FOREIGN_MAX_AGE_ENV = "LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H"
FOREIGN_MAX_AGE_H = 168.0


def _process_start_time(pid: int) -> float | None:
    """When the live process `pid` started (seconds since the epoch), or None if there is none."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def owner_tags() -> dict[str, str]:
    """Who opened a run: this host, this process and when it started (a reused pid then differs)."""
    import socket

    started = _process_start_time(os.getpid())
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()), OWNER_START: f"{started:.2f}"}


def foreign_max_age_s() -> float | None:
    raw = os.environ.get(FOREIGN_MAX_AGE_ENV)
    try:
        hours = FOREIGN_MAX_AGE_H if raw in (None, "") else float(raw)
    except ValueError:
        raise PipelineError(f"{FOREIGN_MAX_AGE_ENV}={raw!r}: not a number of hours (0: never)") from None
    return hours * 3600 if hours > 0 else None


def owner_gone(tags: Mapping[str, str], started_ms: int, *, host: str, now_s: float) -> str | None:
    """Why the process that opened a RUNNING run is gone, or None when it may still be running.

    On this host: gone unless a live process has that pid and that start time (a reused pid has
    another). A run from another host (or one with no owner tags, from before they existed) is
    left alone unless it was opened more than LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H hours ago."""
    owner_host, pid, started = tags.get(OWNER_HOST), tags.get(OWNER_PID), tags.get(OWNER_START)
    if owner_host == host and pid and started:
        now_started = _process_start_time(int(pid)) if pid.isdigit() else None
        if now_started is not None and abs(now_started - float(started)) < 0.05:
            return None
        return f"its process {pid} on {host} is gone"
    max_age, age_s = foreign_max_age_s(), now_s - started_ms / 1000
    if max_age is not None and age_s > max_age:
        where = f"on {owner_host}" if owner_host else "with no owner tags"
        return f"opened {age_s / 3600:.0f} h ago {where} (over {FOREIGN_MAX_AGE_ENV}={max_age / 3600:g})"
    return None


def mark_versions_incomplete(client: Any, run_id: str, why: str) -> None:
    """Tag the model versions a run registered as incomplete: the run did not finish."""
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        client.set_model_version_tag(version.name, str(version.version), INCOMPLETE_TAG, f"run {run_id} {why}")


def replace_dead_runs(client: Any, experiment_id: str, run_name: str, successor: str) -> list[str]:
    """Mark KILLED the experiment's RUNNING runs named `run_name` whose owner process is gone: tag
    each with its successor (and why), any model version it registered as incomplete, and tag
    the successor with the runs it replaced. Returns their ids."""
    import socket
    import time

    quoted = run_name.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id], f"attributes.run_name = '{quoted}' and attributes.status = 'RUNNING'", max_results=1000
    )
    replaced, host, now_s = [], socket.gethostname(), time.time()
    for run in runs:
        run_id = run.info.run_id
        why = None if run_id == successor else owner_gone(run.data.tags, run.info.start_time, host=host, now_s=now_s)
        if why is None:
            continue
        client.log_batch(run_id, tags=run_tags({SUCCESSOR_TAG: successor, KILLED_REASON_TAG: why}))
        client.set_terminated(run_id, status="KILLED")
        mark_versions_incomplete(client, run_id, f"never finished ({why}); superseded by run {successor}")
        replaced.append(run_id)
    if replaced:
        client.set_tag(successor, REPLACED_TAG, ",".join(replaced))
    return replaced
