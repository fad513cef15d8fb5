"""Kills, each on its own copy of the flow's project: every stage SIGKILLed once at a seeded
moment, under `make repro` (the data stages, and report's `dvc repro` inside DVC's own dvc.lock
write) or under the Prefect flow (the training and evaluation stages); `dvc repro` killed mid
fine-tune. Each rerun gives byte-identical outputs, resumes training from its checkpoint, leaves
no temporary and no RUNNING MLflow run, and `dvc status` is clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm_pipeline.io import read_run_record
from tests.integration.pipeline_project import (
    KILLED_STEPS,
    KILLED_TRAINER,
    STAGE_RUNS,
    assert_up_to_date,
    data_digests,
    dvc,
    evaluate_metrics,
    kill_in_lock_write,
    leftovers,
    repro_recovering,
    run_flow,
    set_params,
    stage_process,
    stages_run,
    write_notes,
)

pytestmark = pytest.mark.integration


# Each stage is killed once, under `dvc repro` or under the flow (the property is the same: a rerun
# gives byte-identical outputs); the data stages here, the training and evaluation stages under the
# flow below. Last first: a killed stage may leave its outputs half-deleted, which the ones before
# it never read.
KILLED_UNDER_DVC = ["tokenize@unigram", "tokenize@wordpiece", "tokenize@bpe", "ingest", "fetch"]


def test_each_stage_killed_at_a_random_moment_under_dvc_reruns_to_byte_identical_outputs(project, tmp_path):
    """SIGKILL `make repro`'s `dvc repro --force` of each stage in turn (its whole process group) at a
    seeded random moment, and once inside DVC's own write of dvc.lock (report's, at a seeded byte: the
    moment chosen, not hoped for); then one `make repro`. Each repro first restores a dvc.lock the
    kill before it tore. It reruns (or takes from DVC's run cache) at most the killed stages; their
    data outputs come out byte-identical, so nothing after them reruns; evaluate's scores equal, no
    temporary left, `dvc status` clean."""
    before, scores = data_digests(project), evaluate_metrics(project)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    marker = tmp_path / "killed-in-lock-write"
    cut = random.Random("report").uniform(0.0, 1.0)
    killed = repro_recovering(
        project, "--force", "--single-item", "report", env=env | kill_in_lock_write(cut, marker, "report")
    )
    assert killed.returncode != 0 and marker.exists(), killed.stdout
    for stage in KILLED_UNDER_DVC:
        # a training stage retrains from step 0 (not from the step-N checkpoint its first run left)
        shutil.rmtree(project / "data" / "checkpoints" / stage.replace("@", "-"), ignore_errors=True)
        cmd = [sys.executable, "-m", "llm_pipeline.dvc_state", "repro", "--force", "--single-item", stage]
        repro = subprocess.Popen(
            cmd,
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes the stage CLI with it
        )
        time.sleep(random.Random(stage).uniform(1.5, 6.0))  # seeded: a failure reproduces
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait(timeout=30)
    rerun = repro_recovering(project)
    assert rerun.returncode == 0, rerun.stdout
    assert stages_run(rerun.stdout) <= {*KILLED_UNDER_DVC, "report"}
    assert data_digests(project) == before
    assert evaluate_metrics(project) == scores
    assert leftovers(project) == []
    assert_up_to_date(project)


# each killed once while the flow runs it (the data stages: under `dvc repro` above; finetune: the
# Prefect-retry test below)
KILLED_IN_THE_FLOW = ["pretrain@bert", "evaluate"]


def test_each_stage_killed_in_the_flow_is_retried_to_byte_identical_outputs(
    project, prefect_harness, mlflow_client, monkeypatch, tmp_path
):
    """The flow reruns (force) a pretraining and evaluate; each one's CLI is SIGKILLed (with its
    children) once at a seeded random moment of its run (a fraction of how long the stage took in
    the fixture's flow); Prefect's retry reruns it. Report's `dvc repro`
    is killed inside DVC's write of dvc.lock (at a seeded byte): the retry restores the lock first.
    Then: every data output byte-identical, scores equal, no leftovers, `dvc status` clean, and on
    the dashboard each killed attempt is KILLED (none RUNNING) beside one FINISHED run per stage."""
    import psutil

    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    took = {  # seconds each stage's run took in the fixture's flow (the earliest finished run of its name)
        r.info.run_name: (r.info.end_time - r.info.start_time) / 1000
        for r in sorted(runs, key=lambda r: r.info.start_time, reverse=True)
        if r.info.status == "FINISHED"
    }
    before, scores, seen = data_digests(project), evaluate_metrics(project), {r.info.run_id for r in runs}
    shutil.rmtree(project / "data" / "checkpoints" / "pretrain-bert", ignore_errors=True)  # trains from step 0
    rng = random.Random(11)  # seeded: a failure reproduces
    killed: dict[str, float] = {}

    # the CLI imports for ~2 s before its MLflow run opens; aim anywhere in its lifetime
    delays = {stage: rng.uniform(0.1, 0.9) * (took[stage.replace("@", "-")] + 2.0) for stage in KILLED_IN_THE_FLOW}

    def kill_each_stage_once() -> None:
        deadline = time.monotonic() + 600
        while len(killed) < len(delays) and time.monotonic() < deadline:
            for process in psutil.process_iter(["cmdline", "create_time"]):
                stage = next((s for s in delays if s not in killed and stage_process(s, process, project)), None)
                if stage is None:
                    continue
                time.sleep(max(0.0, process.info["create_time"] + delays[stage] - time.time()))
                with contextlib.suppress(psutil.NoSuchProcess):  # ended before the moment: a miss
                    for victim in [*process.children(recursive=True), process]:
                        victim.kill()
                    killed[stage] = delays[stage]
            time.sleep(0.02)

    marker = tmp_path / "killed-in-lock-write"
    for name, value in kill_in_lock_write(rng.uniform(0.0, 1.0), marker, "report").items():
        monkeypatch.setenv(name, value)
    watcher = threading.Thread(target=kill_each_stage_once, daemon=True)
    watcher.start()
    results = run_flow(project, monkeypatch, force=[*KILLED_IN_THE_FLOW, "report"])
    watcher.join(timeout=10)
    assert set(killed) == set(KILLED_IN_THE_FLOW), killed
    assert marker.exists(), "report's dvc repro was not killed inside its dvc.lock write"
    assert set(results) == STAGE_RUNS
    assert data_digests(project) == before
    assert evaluate_metrics(project) == scores
    assert leftovers(project) == []
    assert_up_to_date(project)
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    new = [r for r in runs if r.info.run_id not in seen]
    assert not [r.info.run_name for r in new if r.info.status == "RUNNING"]
    for stage in KILLED_IN_THE_FLOW:
        statuses = sorted(r.info.status for r in new if r.info.run_name == stage.replace("@", "-"))
        # killed before its run opened: no KILLED run; after: one, marked by its successor
        assert statuses in (["FINISHED"], ["FINISHED", "KILLED"]), (stage, statuses)


def test_dvc_repro_after_a_kill_resumes_training_and_a_changed_local_task_reruns_only_its_readers(project, tmp_path):
    """Two changes, one `dvc repro`, killed mid fine-tune (its whole process group, as a lost job):
    a local task file no run fine-tunes gets more rows, and the GPT classifier's params change.
    The killed repro and the next one together run exactly ingest (it reads the local file through
    the snapshot), the GPT classifier, evaluate and report: no tokenizer, no pretraining, no other
    fine-tune. The rerun resumes the classifier from the newest checkpoint, not step 0."""
    write_notes(project / "local" / "notes.jsonl", 90)
    set_params(
        project,
        "finetune",
        {"runs": {"classification-gpt": {"optim": {"lr": 0.002}, "trainer": KILLED_TRAINER}}},
    )
    checkpoints = project / "data" / "checkpoints" / "finetune-classification-gpt"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",  # the killed repro's "Running stage" lines reach its log
    }

    def manifest() -> dict:
        try:
            return json.loads((checkpoints / "checkpoints.json").read_text())
        except (OSError, ValueError):  # not there, or caught mid-rename
            return {"fingerprint": None, "checkpoints": {}}

    earlier = manifest()["fingerprint"]  # the flow's run left its checkpoints, made with the old lr

    def steps() -> list[int]:
        current = manifest()
        if current["fingerprint"] == earlier:
            return []
        return sorted(entry["step"] for entry in current["checkpoints"].values())

    killed_log = tmp_path / "killed-repro.log"
    with killed_log.open("w") as log:
        repro = subprocess.Popen(
            ["dvc", "repro"], cwd=project, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 300
        while not any(0 < step < KILLED_STEPS for step in steps()):
            assert repro.poll() is None and time.monotonic() < deadline, "no mid-run checkpoint before dvc repro ended"
            time.sleep(0.05)
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait(timeout=30)
    newest = steps()[-1]
    assert 0 < newest < KILLED_STEPS, steps()
    before_kill = stages_run(killed_log.read_text())
    rerun = stages_run(dvc(project, "repro"))
    assert "finetune@classification-gpt" in before_kill and "finetune@classification-gpt" in rerun
    assert before_kill | rerun == {"ingest", "finetune@classification-gpt", "evaluate", "report"}
    written = json.loads((project / "data" / "finetune" / "classification-gpt" / "manifest.json").read_text())
    record = read_run_record(project / "data" / "finetune" / "classification-gpt")
    assert record["resumed_from"].endswith(".ckpt") and written["counts"]["steps"] == KILLED_STEPS
    resumed = re.search(r"step-(\d+)\.ckpt", record["resumed_from"])
    assert resumed and int(resumed.group(1)) >= newest
    assert_up_to_date(project)
