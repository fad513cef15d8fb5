import operator
import os
import socket

import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.corpus.engine import DaskEngine, EngineConfig, LocalEngine, check_reachable, open_engine
from llm_pipeline.errors import PipelineError


def test_local_map_keeps_the_order_of_its_items():
    with LocalEngine(2) as engine:
        assert list(engine.map(operator.neg, range(25))) == [-i for i in range(25)]
    assert list(LocalEngine(1).map(operator.neg, [3, 1])) == [-3, -1]


def test_a_worker_that_dies_fails_the_stage_in_one_line():
    with LocalEngine(2) as engine, pytest.raises(PipelineError, match="a worker process died") as e:
        list(engine.map(os._exit, [0, 1, 0]))  # the worker process exits mid-task
    assert "\n" not in str(e.value)


def test_config_resolves_workers_and_refuses_an_address_without_dask():
    assert EngineConfig(workers="auto").worker_count() == (os.cpu_count() or 1)
    assert EngineConfig(workers=3).worker_count() == 3
    with pytest.raises(ValueError, match="is for kind: dask"):
        EngineConfig(address="tcp://127.0.0.1:8786")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_refused_in_one_line_before_any_work():
    port = _closed_port()
    with pytest.raises(PipelineError, match=f"engine.address tcp://127.0.0.1:{port}: cannot reach") as e:
        DaskEngine(f"tcp://127.0.0.1:{port}", 2)
    assert "\n" not in str(e.value)
    with pytest.raises(PipelineError, match="expected tcp://host:port"):
        check_reachable("tcp://nohost")


@pytest.mark.slow
def test_a_local_dask_cluster_writes_the_same_bytes_as_the_local_engine(tmp_path):
    from tests.unit.data.corpus.test_build import _build, _mixed_sources, _write_all

    local = _write_all(_build(_mixed_sources(), tmp_path, chunk_chars=3000), tmp_path / "local")
    with open_engine(EngineConfig(kind="dask", workers=2)) as engine:
        assert engine.workers == 2
        out = _write_all(_build(_mixed_sources(), tmp_path, chunk_chars=3000, engine=engine), tmp_path / "dask")
    assert out == local
    assert pq.read_table(tmp_path / "dask" / "train.parquet").num_rows > 100
