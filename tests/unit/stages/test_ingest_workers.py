"""ingest on worker processes, killed on purpose: the stage fails in one line, writes nothing,
and its rerun writes the bytes an undisturbed run writes."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("llm-pipeline")
BUILT_IN_TASKS = ("classification", "summarization", "translation", "qa", "nsp", "generation")
TASKS_OFF = {t: {"enabled": False} for t in BUILT_IN_TASKS}


def _project(root: Path, corpus: Path, workers: int) -> Path:
    (root / "params").mkdir(parents=True)
    params = {
        "snapshot_dir": None,
        "progress": False,
        "sources": [{"kind": "jsonl", "path": str(corpus)}],
        "engine": {"workers": workers, "chunk_mb": 0.02, "work_dir": str(root / "work")},
        "tasks": TASKS_OFF,
    }
    (root / "work").mkdir()
    (root / "params" / "ingest.yaml").write_text(yaml.safe_dump(params))
    return root


def _ingest(project: Path) -> subprocess.Popen:
    env = os.environ | {"LLM_PIPELINE_TRACKING": "off"}
    return subprocess.Popen([str(CLI), "ingest"], cwd=project, env=env, stderr=subprocess.PIPE, text=True)


def _outputs(project: Path) -> dict[str, bytes]:
    out = project / "data" / "ingest"
    return {p.name: p.read_bytes() for p in sorted((out / "corpus").iterdir())} | {
        "quarantine": (out / "quarantine.parquet").read_bytes()
    }


def test_a_killed_worker_fails_the_stage_in_one_line_and_the_rerun_writes_the_same_bytes(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(30, 120))) for _ in range(3000)]
    texts += texts[:200]  # exact copies, quarantined
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))

    calm = _project(tmp_path / "calm", corpus, workers=1)
    assert _ingest(calm).wait(timeout=300) == 0
    killed = _project(tmp_path / "killed", corpus, workers=2)
    proc = _ingest(killed)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        # a worker: a process forked by the stage's forkserver, once chunks are being written
        chunks = list((killed / "work").glob("*/chunk-*.arrow"))
        workers = [p for c in psutil.Process(proc.pid).children() for p in c.children()]
        if len(chunks) >= 2 and workers:
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=120)
    assert victim is not None, "the stage ended before a worker could be killed"
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and "a worker process died" in lines[0], stderr[-2000:]
    assert not (killed / "data" / "ingest").exists()  # nothing written
    assert list((killed / "work").iterdir()) == []  # the scratch copy removed

    assert _ingest(killed).wait(timeout=300) == 0
    assert _outputs(killed) == _outputs(calm)
