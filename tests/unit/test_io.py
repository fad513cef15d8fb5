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


def test_a_killed_writers_temporary_is_removed_by_the_next_write_and_a_live_ones_is_kept(tmp_path):
    import signal
    import subprocess
    import sys

    from llm_pipeline.io import atomic_path

    final = tmp_path / "out"
    script = (
        "import sys, time\nfrom llm_pipeline.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.mkdir(); (tmp / 'half').write_text('x'); print(flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(final)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    writer.stdout.readline()  # its temporary exists now
    live = final.with_name(f".out.tmp-{writer.pid}")
    assert live.is_dir()
    with atomic_path(final) as tmp:
        tmp.write_text("done")
    assert live.is_dir()  # a writer still at work keeps its temporary
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert live.is_dir()  # SIGKILL: no cleanup ran
    with atomic_path(final) as tmp:
        tmp.write_text("again")
    assert not live.exists() and final.read_text() == "again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
