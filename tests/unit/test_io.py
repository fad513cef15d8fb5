from __future__ import annotations

import pytest

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import atomic_path, describe_inputs, read_json, sha256_text, write_json


def _write_half_then_crash(target):
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        _write_half_then_crash(target)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_the_old_output_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]


def test_describe_inputs_hashes_files_in_directories(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello")
    [entry] = describe_inputs([tmp_path / "d"])
    assert entry["sha256"] == sha256_text("hello") and entry["bytes"] == 5


def test_read_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{\n "a": 1,\n}')
    with pytest.raises(PipelineError, match=r"m.json: not valid JSON at line 3"):
        read_json(path)
    write_json(path, {"a": 1})
    assert read_json(path) == {"a": 1}
