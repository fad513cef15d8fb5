"""Two-process data-parallel training (DDP over gloo, CPU) through the real stage CLI.

A 2-process run at batch B must follow the loss curve of a 1-process run at batch 2B (the
loaders hand the two ranks, together, the samples the one process reads), only global rank
zero may write outputs or talk to MLflow, and the MLflow run holds one set of metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.integration.test_resume_after_kill import command, workspace  # noqa: F401  # the shared fixture

STEPS = 30
# dropout off: each rank draws its own masks, so with dropout the two runs differ by design
NO_DROPOUT = {"families.gpt.model.overrides.dropout": "0.0"}
# float sums in another order (two half-batch means averaged vs one full-batch mean) drift a little
LOSS_TOLERANCE = 2e-3  # relative, per step


def run(args: list[str], tracking: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tracking / 'mlflow.db'}",
        "LLM_PIPELINE_ARTIFACT_ROOT": str(tracking / "mlartifacts"),
        "LLM_PIPELINE_TRACKING": "on",
    }
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=tracking)
    assert done.returncode == 0, done.stderr[-3000:]


def curve(path: Path) -> list[float]:
    return [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:]]


def trainer_sets(stage: str, key: str, devices: int, batch: int) -> dict[str, str]:
    block = f"families.{key}" if stage == "pretrain" else f"runs.{key}"
    sets = {
        f"{block}.trainer.devices": str(devices),
        f"{block}.trainer.strategy": "ddp" if devices > 1 else "auto",
        f"{block}.trainer.max_steps": str(STEPS),
        f"{block}.trainer.checkpoint_every_n_steps": "10",
    }
    sets[f"{block}.data.batch_size" if stage == "pretrain" else f"{block}.batch_size"] = str(batch)
    return sets


def compare(stage, params, key, root, **sets):
    one, two = root / f"{stage}-{key}-1", root / f"{stage}-{key}-2"
    for folder, devices, batch in ((one, 1, 8), (two, 2, 4)):
        folder.mkdir(parents=True)
        run(command(stage, params, folder, **sets, **trainer_sets(stage, key, devices, batch)), folder)
    loss_one = curve(one / "plots" / f"{stage}-{key}_loss.tsv")
    loss_two = curve(two / "plots" / f"{stage}-{key}_loss.tsv")
    assert len(loss_one) == len(loss_two) == STEPS
    worst = max(abs(a - b) / abs(a) for a, b in zip(loss_one, loss_two))
    assert worst < LOSS_TOLERANCE, f"2-process loss curve departs from the 1-process one by {worst:.2e}"
    assert loss_two[-1] < loss_two[0]  # and it trains

    # rank zero alone wrote: one model folder, no other rank's temporary folders, one report
    outputs = sorted(p.name for p in (two / "model").iterdir())
    assert outputs == [key], outputs
    report = json.loads((two / "reports" / f"{stage}-{key}.json").read_text())
    # one MLflow run with one set of metrics: each step's train/loss logged once
    client = mlflow.MlflowClient(f"sqlite:///{two / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [report["mlflow_run_id"]]
    history = client.get_metric_history(report["mlflow_run_id"], "train/loss")
    assert sorted(m.step for m in history) == sorted({m.step for m in history}) and len(history) >= STEPS // 10
    # the logged loss is the all-rank mean: the curve's value at that step (MLflow may count from 0)
    logged = {m.step: m.value for m in history}
    by_step = dict(enumerate(loss_two, start=1))
    assert any(
        all(by_step.get(step + shift) == pytest.approx(value, rel=1e-5) for step, value in logged.items())
        for shift in (0, 1)
    ), (logged, by_step)


def test_pretraining_with_two_processes_matches_one_process_at_twice_the_batch(workspace):  # noqa: F811
    root, params, _ = workspace
    compare("pretrain", params, "gpt", root / "ddp", item="gpt", **NO_DROPOUT)


def test_finetuning_with_two_processes_matches_one_process_at_twice_the_batch(workspace):  # noqa: F811
    root, params, finetune = workspace
    base = root / "ddp-base"
    subprocess.run(
        command("pretrain", params, base, item="gpt", output_dir=str(root / "ddp-pretrained"), **NO_DROPOUT),
        env={**os.environ, "LLM_PIPELINE_TRACKING": "off", "OMP_NUM_THREADS": "1"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    compare(
        "finetune",
        finetune,
        "classification-gpt",
        root / "ddp",
        item="classification-gpt",
        pretrain_root=str(root / "ddp-pretrained"),
        **{"runs.classification-gpt.head_dropout": "0.0"},
    )


if sys.platform != "linux":  # gloo over localhost is what CI has
    pytestmark = pytest.mark.skip("DDP on CPU is tested on Linux")
