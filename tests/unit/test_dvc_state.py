"""dvc.lock torn by a kill: detected, restored from the last whole copy, and DVC then brings every
output back byte-identical with a clean `dvc status`, whatever byte the kill cut the file at.

A tiny DVC project (a chain of cheap Python stages, foreach items, folder outputs) stands in for the
pipeline: DVC runs in-process here, so forty cuts cost seconds. The real SIGKILL inside DVC's write,
under `dvc repro` and under the Prefect flow, is in tests/integration/test_dvc_lock_kill.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llm_pipeline import dvc_state
from llm_pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[2]

STEP = """
import hashlib, pathlib, sys
name, out, *inputs = sys.argv[1:]
digest = hashlib.sha256(name.encode())
for path in sorted(pathlib.Path(i) for i in inputs):
    for file in [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file()):
        digest.update(file.read_bytes())
out = pathlib.Path(out)
out.mkdir(parents=True, exist_ok=True)
for k in range(3):
    (out / f"part-{k}.txt").write_text(hashlib.sha256(digest.digest() + bytes([k])).hexdigest() * 4)
"""


def dvc_yaml(python: str) -> str:
    """first -> mid@a,b,c -> last: several stages, foreach items and folder outputs, and a stage that
    depends on the folder holding other stages' outputs (as evaluate depends on data/tokenize)."""
    return f"""
stages:
  first:
    cmd: {python} step.py first out/first in.txt
    deps: [step.py, in.txt]
    outs: [out/first]
  mid:
    foreach: [a, b, c]
    do:
      cmd: {python} step.py mid-${{item}} out/mids/mid-${{item}} out/first
      deps: ["step.py", "out/first"]
      outs: ["out/mids/mid-${{item}}"]
  last:
    cmd: {python} step.py last out/last out/mids
    deps: [step.py, out/mids]
    outs: [out/last]
"""


def repro(project: Path) -> None:
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(str(project)) as repo:
        repo.reproduce()


def status(project: Path) -> dict:
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(str(project)) as repo:
        return repo.status()


def digests(project: Path) -> dict[str, str]:
    return {
        str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((project / "out").rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def project(tmp_path) -> Path:
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True)
    (tmp_path / "step.py").write_text(STEP)
    (tmp_path / "in.txt").write_text("the raw input\n")
    (tmp_path / "dvc.yaml").write_text(dvc_yaml(sys.executable))
    repro(tmp_path)
    assert status(tmp_path) == {}
    return tmp_path


def test_a_whole_lock_is_kept_and_passes(project):
    assert dvc_state.lock_problem(project) is None
    assert dvc_state.keep_good_copy(project, before="first")
    assert (project / dvc_state.GOOD_COPY).read_bytes() == (project / "dvc.lock").read_bytes()
    assert dvc_state.recover(project) == []


def test_every_cut_of_dvc_lock_is_restored_and_dvc_brings_back_identical_outputs(project):
    """Forty seeded cuts spread over the whole file (0 bytes included): each one DVC's own parser
    rejects, or that parses yet lies (a short md5, a missing stage), is found and the whole copy
    put back with one log line; `dvc repro` then restores every output (run cache or rerun)
    byte-identical and `dvc status` is clean."""
    whole = (project / "dvc.lock").read_bytes()
    outputs = digests(project)
    assert dvc_state.keep_good_copy(project, before="the test")
    rng = random.Random(23)
    cuts = sorted({0, len(whole) - 1, *(rng.randrange(len(whole)) for _ in range(38))})
    for cut in cuts:
        (project / "dvc.lock").write_bytes(whole[:cut])
        problem = dvc_state.lock_problem(project, dvc_state.load_good_copy(project))
        assert problem is not None, f"a cut at byte {cut} of {len(whole)} passed as whole"
        [line] = dvc_state.recover(project)
        assert "restored the whole copy kept at" in line and "before the test" in line, line
        assert (project / "dvc.lock").read_bytes() == whole
        repro(project)
        assert digests(project) == outputs, cut
        assert status(project) == {}, cut


def test_a_cut_lock_after_a_stage_reran_is_restored_and_that_stage_comes_back_identical(project):
    """The whole copy is older than the cut file (a stage ran between them, as when the kill lands in
    the lock write after the stage's command finished): restoring it makes DVC see that stage as
    changed; DVC checks its outputs out of the run cache (or reruns it) to the same bytes."""
    outputs = digests(project)
    assert dvc_state.keep_good_copy(project, before="mid@b")
    (project / "out" / "mids" / "mid-b" / "part-0.txt").unlink()  # as a killed `dvc repro --force mid@b` leaves it
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(str(project)) as repo:
        repo.reproduce("mid@b", force=True, single_item=True)
    text = (project / "dvc.lock").read_bytes()
    (project / "dvc.lock").write_bytes(text[: len(text) // 2])
    assert dvc_state.recover(project)
    repro(project)
    assert status(project) == {}
    assert digests(project) == outputs


def test_a_torn_lock_with_no_copy_is_one_line_saying_what_to_do(project):
    text = (project / "dvc.lock").read_text()
    (project / "dvc.lock").write_text(text[: len(text) // 3])
    with pytest.raises(PipelineError) as error:
        dvc_state.recover(project)
    message = str(error.value)
    assert "\n" not in message and "dvc.lock is torn" in message and "git checkout dvc.lock" in message


def test_a_torn_rwlock_is_removed_and_dvc_works_again(project):
    rwlock = project / dvc_state.RWLOCK_FILE
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    rwlock.write_text('{"read": {"out/first": [{"pid": 1, "cmd": "dvc repro"}]}, "wri')
    assert dvc_state.rwlock_problem(project) is not None
    [line] = dvc_state.recover(project)
    assert "rwlock" in line and not rwlock.exists()
    repro(project)
    assert status(project) == {}


def test_check_and_repro_commands(project, capsys, monkeypatch):
    """`python -m llm_pipeline.dvc_state check` names the torn file (exit 1); `repro` recovers and
    runs `dvc repro` (what `make repro` runs): exit 0, everything up to date."""
    assert dvc_state.main(["--project-dir", str(project), "check"]) == 0
    assert dvc_state.keep_good_copy(project, before="check")
    whole = (project / "dvc.lock").read_bytes()
    (project / "dvc.lock").write_bytes(whole[: len(whole) - 40])
    assert dvc_state.main(["--project-dir", str(project), "check"]) == 1
    assert capsys.readouterr().out.startswith("torn: dvc.lock")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert dvc_state.main(["--project-dir", str(project), "repro"]) == 0
    assert (project / "dvc.lock").read_bytes() == whole
    assert status(project) == {}
    info = json.loads((project / dvc_state.GOOD_COPY_INFO).read_text())
    assert info["before"] == "the next dvc command"


def test_a_killed_writers_temporary_changes_no_hash_and_the_guard_removes_it(project):
    """A stage killed mid-write leaves `.<out>.tmp-<pid>` beside its output, inside the folder another
    stage depends on; DVC may restore the killed stage from its run cache, so it never runs to clear
    it. The project's .dvcignore keeps it out of every hash (nothing reruns for it) and the guard
    the flow and `make repro` run first removes it; a live writer's temporary is left alone."""
    shutil.copy(REPO / ".dvcignore", project / ".dvcignore")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = project / "out" / "mids" / f".mid-a.tmp-{finished.stdout.strip()}"
    dead.mkdir()
    (dead / "part-0.txt").write_text("half of an output")
    live = project / "out" / "mids" / f".mid-b.tmp-{os.getppid()}"
    live.mkdir()
    assert status(project) == {}
    [line] = dvc_state.guard(project, before="the test")
    assert "removed 1 temporaries" in line and str(dead) in line
    assert not dead.exists() and live.exists()
    assert status(project) == {}
