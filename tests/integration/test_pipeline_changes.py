"""Changes, each run through the Prefect flow on its own copy of the flow's project: bert's
pretraining moved to 2 DDP processes, a run added to the fine-tune matrix, and the GPT classifier's
params changed with its trainer SIGKILLed mid-run (Prefect's retry resumes it from the checkpoint).
Exactly what depends on the changes reruns.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from llm_pipeline.io import read_run_record
from tests.integration.pipeline_project import (
    DEFAULT_RUNS,
    KILLED_STEPS,
    KILLED_TRAINER,
    QUICK_TRAINER,
    assert_up_to_date,
    run_flow,
    set_params,
    stage_process,
)

pytestmark = pytest.mark.integration


def test_a_pretrain_change_a_new_matrix_run_and_a_killed_fine_tune_rerun_only_what_they_touch(
    project, prefect_harness, mlflow_client, monkeypatch
):
    """In one flow run: bert's pretraining params change (24 steps, 2 DDP processes over gloo), a
    run is added to the matrix (classification-t5), and the GPT classifier's params change, its
    trainer SIGKILLed after its first new checkpoint. Exactly pretrain@bert, the fine-tunes of
    bert, the new run, the GPT classifier (a KILLED attempt and its FINISHED retry), evaluate and
    report execute (one MLflow run each, plus fetch and the pipeline's); t5 is not pretrained
    again; the 2-process run is one MLflow run with one value per logged step (rank 1 opened
    none), one model folder; the retry resumed from the checkpoint the kill left."""
    import psutil

    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    before = {r.info.run_id for r in mlflow_client.search_runs(experiments)}
    # resume: never, as a 1-process checkpoint may not be resumed on 2 (refused by design)
    trainer = {"devices": 2, "strategy": "ddp", "max_steps": 24, "log_every_n_steps": 2, "resume": "never"}
    set_params(project, "pretrain", {"families": {"bert": {"trainer": trainer}}})
    run = {"task": "classification", "family": "t5", "max_len": 64, "batch_size": 16}
    gpt_change = {"optim": {"lr": 0.0015}, "trainer": KILLED_TRAINER}
    runs = {"classification-t5": run | {"trainer": QUICK_TRAINER | {"max_steps": 10}}, "classification-gpt": gpt_change}
    set_params(project, "finetune", {"runs": runs})

    checkpoints = project / "data" / "checkpoints" / "finetune-classification-gpt"
    earlier = json.loads((checkpoints / "checkpoints.json").read_text())["fingerprint"]
    killed: list[int] = []

    def kill_the_trainer_after_a_new_checkpoint() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                manifest = json.loads((checkpoints / "checkpoints.json").read_text())
            except (OSError, ValueError):
                manifest = {"fingerprint": earlier, "checkpoints": {}}
            if manifest["fingerprint"] != earlier and manifest["checkpoints"]:
                for process in psutil.process_iter(["cmdline"]):
                    if stage_process("finetune@classification-gpt", process, project):
                        process.kill()
                        killed.append(max(e["step"] for e in manifest["checkpoints"].values()))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_the_trainer_after_a_new_checkpoint, daemon=True)
    watcher.start()
    results = run_flow(project, monkeypatch)
    watcher.join(timeout=10)

    assert results["pretrain-bert"]["steps"] == 24
    new = [r for r in mlflow_client.search_runs(experiments) if r.info.run_id not in before]
    bert_runs = {f"finetune-{name}" for name, spec in DEFAULT_RUNS.items() if spec["family"] == "bert"}
    assert bert_runs  # the default matrix fine-tunes bert; only those runs depend on its pretraining
    expected = {"fetch", "pipeline", "pretrain-bert", *bert_runs, "finetune-classification-t5", "evaluate", "report"}
    assert sorted(r.info.run_name for r in new) == sorted([*expected, *["finetune-classification-gpt"] * 2])
    statuses = sorted((r.info.run_name, r.info.status) for r in new if r.info.status != "FINISHED")
    assert statuses == [("finetune-classification-gpt", "KILLED")], statuses
    assert sorted(p.name for p in (project / "data" / "pretrain").iterdir()) == ["bert", "gpt", "t5"]  # no leftovers
    [pretrain] = [r for r in new if r.info.run_name == "pretrain-bert"]
    steps = [m.step for m in mlflow_client.get_metric_history(pretrain.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps)) >= 10  # one value per logged step, not one per rank

    assert killed and killed[0] < KILLED_STEPS, "the trainer was not killed mid-run"
    assert results["finetune-classification-gpt"]["steps"] == KILLED_STEPS
    record = read_run_record(project / "data" / "finetune" / "classification-gpt")
    resumed = re.search(r"step-(\d+)\.ckpt", record["resumed_from"] or "")
    assert resumed and int(resumed.group(1)) >= killed[0], record
    assert_up_to_date(project)
