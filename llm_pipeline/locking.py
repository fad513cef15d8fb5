"""One pipeline run per project at a time: an advisory lock file naming its holder.

`fcntl.flock` is released by the kernel when the holder dies (SIGKILL included), so a crashed
run never leaves a stale lock; the file's content only tells the refused run who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError

LOCK_NAME = ".llm-pipeline.lock"


@contextlib.contextmanager
def pipeline_lock(project_dir: str | Path, holder: dict[str, Any] | None = None) -> Iterator[Path]:
    """Hold the project's lock for the block; raise PipelineError naming the holder if taken."""
    path = Path(project_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{path}: another pipeline run holds this project ({_describe(path)})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started_unix": int(time.time()), **(holder or {})}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: nobody to name
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _describe(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        info = {}
    if not info:
        return "holder unknown"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("started_unix", 0)))
    extra = ", ".join(f"{k} {v}" for k, v in info.items() if k not in {"pid", "host", "started_unix"} and v)
    return f"pid {info.get('pid')} on {info.get('host')}, started {started}" + (f", {extra}" if extra else "")


CACHE_LOCK_NAME = ".lock"


@contextlib.contextmanager
def cache_lock(cache_dir: str | Path) -> Iterator[None]:
    """Hold `cache_dir`'s lock for the block, waiting for another holder (a cache shared by
    several projects, or test workers, is filled by one apt run at a time: two `apt-get update`s
    into one lists folder overwrite each other's partial files)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(cache_dir) / CACHE_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger(__name__).info("waiting for %s: another process is filling it", cache_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
