"""One pipeline run per project: a second is refused naming the first; a killed holder frees it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from llm_pipeline.errors import PipelineError
from llm_pipeline.locking import LOCK_NAME, pipeline_lock

HOLD = """
import sys, time
from llm_pipeline.locking import pipeline_lock
with pipeline_lock(sys.argv[1], {"flow_run": "nightly-run-7"}):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_is_refused_naming_the_running_one_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PipelineError) as refused, pipeline_lock(tmp_path):
            pass
        message = str(refused.value)
        assert "\n" not in message and LOCK_NAME in message
        assert f"pid {holder.pid}" in message and "flow_run nightly-run-7" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops a dead process's flock; no stale lock to clean up
        try:
            with pipeline_lock(tmp_path):
                break
        except PipelineError:
            assert time.monotonic() < deadline, "the lock outlived its killed holder"
            time.sleep(0.1)
    with pipeline_lock(tmp_path), pytest.raises(PipelineError), pipeline_lock(tmp_path):
        pass  # and the lock is really taken while held, within one process too


HOLD_CACHE = """
import sys, time
from pathlib import Path
from llm_pipeline.locking import cache_lock
with cache_lock(sys.argv[1]):
    Path(sys.argv[2]).write_text("holding")
    time.sleep(0.5)
    Path(sys.argv[2]).write_text("done")
"""


def test_a_shared_cache_is_filled_by_one_process_at_a_time(tmp_path):
    """cache_lock waits for the holder (it does not refuse, unlike the project lock)."""
    from llm_pipeline.locking import cache_lock

    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CACHE, str(tmp_path / "cache"), str(state)])
    while not state.exists():
        assert holder.poll() is None, "the holder died before taking the lock"
        time.sleep(0.01)
    with cache_lock(tmp_path / "cache"):
        assert state.read_text() == "done"  # got it only once the holder had finished
    holder.wait(timeout=30)
