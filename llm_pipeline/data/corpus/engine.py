"""Where ingest's per-chunk work runs (params/ingest.yaml `engine:`).

The corpus is cut into chunks of about `chunk_mb` of text in source order; each chunk is
cleaned, split, hashed and MinHashed by a worker that writes its result to the work folder.
Results come back in chunk order whatever the engine and worker count, and a chunk's content
never depends on which worker made it, so the outputs are byte-identical for every engine and
worker count: DVC sees no change when only the engine settings change.

- `local`: worker processes on this machine (`workers: 1` runs them in this process, no pool).
- `dask`: the workers of a Dask cluster (dask.distributed), for corpora beyond one machine:
  `address: tcp://host:8786` connects to a running scheduler (the work folder must then be on a
  file system every worker sees); no address starts a local cluster of `workers` processes.
  Dask was chosen over Ray and datatrove's executors (README, "Ingest at scale").
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from llm_pipeline.config import StageConfig
from llm_pipeline.errors import PipelineError

T = TypeVar("T")
R = TypeVar("R")


class EngineConfig(StageConfig):
    kind: Literal["local", "dask"] = "local"  # worker processes here, or a Dask cluster's workers
    address: str | None = None  # dask: the scheduler (tcp://host:8786); null: a local cluster
    workers: int | Literal["auto"] = "auto"  # auto: one per core (os.cpu_count())
    # text per chunk: peak memory grows with chunk_mb x workers, not with the corpus
    chunk_mb: float = Field(8.0, gt=0)
    # the corpus's scratch copy (chunks, dedup partitions, signatures: about 2-3x the text);
    # null: the system temp folder. Removed when the stage ends.
    work_dir: str | None = None

    @model_validator(mode="after")
    def _address_for_dask(self) -> EngineConfig:
        if self.address and self.kind != "dask":
            raise ValueError(f"address: {self.address!r} is for kind: dask (kind is {self.kind})")
        return self

    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        if self.workers < 1:
            raise ValueError(f"engine.workers: {self.workers}; use 1 or more, or auto")
        return self.workers


class LocalEngine:
    """Ordered map over worker processes, with at most 2 x workers chunks in flight (so a
    fast reader never piles the corpus up in memory waiting for slow workers)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        # forkserver: workers start from a clean process, not a fork of this one (whose
        # threads, e.g. a logging lock held mid-write, a fork would copy half-way)
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) if workers > 1 else None
        )

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        stream = iter(items)
        head = list(itertools.islice(stream, 2))
        if self._pool is None or len(head) < 2:  # one chunk: a pool (its processes start on first use) buys nothing
            yield from map(fn, itertools.chain(head, stream))
            return
        pool = self._pool
        try:
            yield from _ordered(lambda item: pool.submit(fn, item), itertools.chain(head, stream), self.workers)
        except BrokenProcessPool as e:
            raise PipelineError(
                f"ingest: a worker process died ({e}); nothing was written, rerun the stage "
                "(with fewer engine.workers or a smaller engine.chunk_mb if it ran out of memory)"
            ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskEngine:
    """The same ordered, bounded map on a Dask cluster's workers."""

    def __init__(self, address: str | None, workers: int) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise PipelineError("engine.kind: dask needs dask.distributed: pip install 'llm-pipeline[dask]'") from None
        self._cluster = None
        if address:
            check_reachable(address)
            self._client = Client(address, timeout=CONNECT_TIMEOUT_S)
        else:
            self._cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            )
            self._client = Client(self._cluster)
        self.workers = max(1, len(self._client.scheduler_info(n_workers=-1)["workers"]))

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        from distributed import KilledWorker

        client = self._client
        try:
            yield from _ordered(lambda item: client.submit(fn, item, pure=False), items, self.workers)
        except KilledWorker as e:
            raise PipelineError(
                f"ingest: Dask workers died running a chunk ({e}); nothing was written, rerun the stage"
            ) from None

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CONNECT_TIMEOUT_S = 10


def check_reachable(address: str) -> None:
    """One line, before any work, when nothing listens at the scheduler's address."""
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise PipelineError(f"engine.address {address!r}: expected tcp://host:port (a Dask scheduler)")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise PipelineError(
            f"engine.address {address}: cannot reach the Dask scheduler ({e.strerror or e}); "
            "start it (`dask scheduler`) or fix the address"
        ) from None


def _ordered(submit: Callable[[T], Any], items: Iterable[T], workers: int) -> Iterator[Any]:
    """Results of submit(item).result() in item order, at most 2 x workers in flight."""
    pending: deque[Any] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= 2 * workers:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


Engine = LocalEngine | DaskEngine


def open_engine(cfg: EngineConfig) -> Engine:
    if cfg.kind == "dask":
        return DaskEngine(cfg.address, cfg.worker_count())
    return LocalEngine(cfg.worker_count())
