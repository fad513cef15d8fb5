"""On demand: fine-tune one task x family run of params/finetune.yaml, then evaluate and report.

`dvc repro finetune@<task>-<family>` runs whatever that run needs that is stale first (new data:
ingest, its tokenizer, its family's pretraining) and nothing else of the matrix. Deployed next to
the nightly one (prefect.yaml):

  prefect deployment run 'llm-pipeline-finetune/on-demand' --param task=classification --param family=gpt
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))  # a deployment's worker imports this file by path

from flows.pipeline import finetune_runs, in_directory, lock_holder, run_stage  # noqa: E402  (after the path fix)
from llm_pipeline.errors import PipelineError  # noqa: E402
from llm_pipeline.locking import pipeline_lock  # noqa: E402
from llm_pipeline.stages.base import REPORTS_DIR  # noqa: E402
from llm_pipeline.tracking import runs  # noqa: E402


def run_name(project_dir: str, task: str, family: str) -> str:
    """`<task>-<family>`, if params/finetune.yaml's `runs` has it; else one line listing those it has."""
    name, runs = f"{task}-{family}", finetune_runs(project_dir)
    if name not in runs:
        path = Path(project_dir) / "params" / "finetune.yaml"
        raise PipelineError(f"{path}: no run {name!r} under runs:; available: {', '.join(runs)}")
    return name


def mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


@flow(name="llm-pipeline-finetune", log_prints=True)
def finetune_on_demand(task: str, family: str, force: bool = False, project_dir: str = str(PROJECT_DIR)) -> dict:
    """One MLflow parent run holding the stages that ran: the run's upstream, the run, evaluate, report.

    force: retrain the run even if DVC has it up to date (its upstream still only when stale:
    `dvc repro --force` without --single-item would redo every stage before it), once.
    """
    name = run_name(project_dir, task, family)
    stage = f"finetune@{name}"
    # tracking defaults (mlflow.db) are relative to the project; one pipeline run per project at a time
    with in_directory(project_dir), pipeline_lock(project_dir, lock_holder()):
        parent = runs.start_pipeline_run(f"on-demand-{name}", tags={"pipeline.run": name})
        results: dict[str, dict] = {}
        try:
            report = Path(project_dir) / REPORTS_DIR / f"finetune-{name}.json"
            before = mtime(report)
            results[f"finetune-{name}"] = run_stage(stage, project_dir, parent, single_item=False)
            if force and mtime(report) == before:  # DVC found it up to date and did not retrain it
                results[f"finetune-{name}"] = run_stage(stage, project_dir, parent, force=True)
            results["evaluate"] = run_stage("evaluate", project_dir, parent)
            results["report"] = run_stage("report", project_dir, parent)
            reports = Path(project_dir) / "reports"
            runs.log_to_run(parent, [reports / "summary.md", reports / "figures"])
        except BaseException:
            runs.end_pipeline_run(parent, status="FAILED")
            raise
        metrics = {
            f"{step}/{key}": value
            for step, values in results.items()
            for key, value in values.items()
            if isinstance(value, (int, float))
        }
        runs.end_pipeline_run(parent, metrics=metrics)
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Fine-tune one run of params/finetune.yaml, then evaluate and report")
    parser.add_argument("--task", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--force", action="store_true", help="retrain the run even if it is up to date")
    args = parser.parse_args()
    try:
        finetune_on_demand(args.task, args.family, args.force)
    except PipelineError as exc:
        print(f"llm-pipeline: error: {exc}", file=sys.stderr)
        sys.exit(2)
