"""The Prefect flow: fetch -> ingest -> tokenize -> pretrain -> finetune (per task x family run) -> evaluate -> report.

Thin on purpose. Each stage is a Prefect task (with retries) that runs `dvc repro -s <stage>`
in the project, so DVC stays the one judge of what is up to date: a stage whose inputs,
code and params are unchanged is skipped, and `dvc status` is clean after the flow.
Running the stage as a subprocess also matters for training: Lightning's multi-process
strategies re-execute the launching command, which must be the stage CLI, not this flow.

Run once, no server:   python flows/pipeline.py
Serve on a schedule:   see prefect.yaml and the README.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))  # so a deployment's worker finds llm_pipeline from a checkout

from llm_pipeline import dvc_state  # noqa: E402  (after the path fix above)
from llm_pipeline.errors import PipelineError  # noqa: E402
from llm_pipeline.locking import pipeline_lock  # noqa: E402
from llm_pipeline.stages.base import REPORTS_DIR  # noqa: E402
from llm_pipeline.tracking import runs  # noqa: E402
from llm_pipeline.tracking.client import PARENT_RUN_ENV  # noqa: E402
from llm_pipeline.tracking.lineage_tags import PREFECT_DEPLOYMENT_ENV, PREFECT_FLOW_RUN_ENV  # noqa: E402


def stage_env(parent_run_id: str | None) -> dict[str, str]:
    """Env for the stage subprocess: the venv's scripts first on PATH, runs nested under the flow's,
    and the Prefect flow run and deployment that ran it (tracking tags every run with them)."""
    from prefect.runtime import deployment, flow_run

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    ids = {PREFECT_FLOW_RUN_ENV: flow_run.id, PREFECT_DEPLOYMENT_ENV: deployment.name}
    for var, value in ids.items():
        if value:  # None outside a flow run / for a flow run not started from a deployment
            env[var] = str(value)
    return env


@task(retries=1, retry_delay_seconds=10, task_run_name="{stage}")
def run_stage(
    stage: str, project_dir: str, parent_run_id: str | None, force: bool = False, single_item: bool = True
) -> dict:
    """`dvc repro -s <stage>`; returns the stage's small report (metrics), not data.

    single_item=False: plain `dvc repro <stage>`, which first runs the stale stages it depends
    on (the on-demand fine-tune uses it). The stage's own output (progress bars, Lightning logs)
    goes straight to this process's terminal / the worker's log, so a long stage shows its progress live.
    """
    logger = get_run_logger()
    cmd = ["dvc", "repro", *(["--single-item"] if single_item else []), stage] + (["--force"] if force else [])
    guard_dvc_state(project_dir, before=stage)
    logger.info("running: %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=project_dir, env=stage_env(parent_run_id))
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed: `{' '.join(cmd)}` exited {proc.returncode} (its output is above)")
    dvc_state.keep_good_copy(project_dir, before=f"the stage after {stage}", dvc_succeeded=True)
    metrics = stage_metrics(project_dir, stage)
    logger.info("%s: %s", stage, json.dumps(metrics))
    return metrics


def guard_dvc_state(project_dir: str, before: str) -> None:
    """Before every `dvc` command: a dvc.lock (or rwlock) torn by a kill, in this run or an earlier
    one, is restored from the last whole copy (one log line says what and from when), and the
    whole file is kept for the next time. A retried stage passes here first, so its retry recovers."""
    for line in dvc_state.guard(project_dir, before):
        get_run_logger().warning("recovered: %s", line)


def stage_metrics(project_dir: str, stage: str) -> dict:
    """The metrics of the stage's small report (reports/<stage>.json), {} if it has none."""
    report = Path(project_dir) / REPORTS_DIR / f"{stage.replace('@', '-')}.json"
    return json.loads(report.read_text()).get("metrics", {}) if report.is_file() else {}


@task(task_run_name="dvc status")
def stale_stages(project_dir: str) -> set[str]:
    """The stages `dvc status` finds out of date (changed deps, params, outs or code)."""
    guard_dvc_state(project_dir, before="dvc status")
    proc = subprocess.run(
        ["dvc", "status", "--json"], cwd=project_dir, env=stage_env(None), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc status` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return set(json.loads(proc.stdout or "{}"))


def foreach_items(project_dir: str, stage: str, key: str) -> list[str]:
    """Item names of a foreach stage: `key` of params/<stage>.yaml, as dvc.yaml's foreach reads it
    (finetune's `runs`, pretrain's `families`, tokenize's `tokenizers`: mapping keys)."""
    import yaml

    params = yaml.safe_load((Path(project_dir) / "params" / f"{stage}.yaml").read_text())
    return list(params[key])


def finetune_runs(project_dir: str) -> list[str]:
    return foreach_items(project_dir, "finetune", "runs")


def tokenizer_names(project_dir: str) -> list[str]:
    return foreach_items(project_dir, "tokenize", "tokenizers")


@task(retries=2, retry_delay_seconds=30, task_run_name="dvc push")
def push_outputs(project_dir: str) -> None:
    """`dvc push`: every stage output to the project's DVC remote (.dvc/config)."""
    guard_dvc_state(project_dir, before="dvc push")
    proc = subprocess.run(["dvc", "push"], cwd=project_dir, env=stage_env(None))
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc push` exited {proc.returncode} (output above); check the remote in .dvc/config")


def pipeline_stages(project_dir: str) -> list[str]:
    """Every stage the flow runs, in order, as `dvc repro` names them (foreach items as `stage@item`)."""
    return [
        "fetch",
        "ingest",
        *(f"tokenize@{name}" for name in tokenizer_names(project_dir)),
        *(f"pretrain@{name}" for name in foreach_items(project_dir, "pretrain", "families")),
        *(f"finetune@{name}" for name in finetune_runs(project_dir)),
        "evaluate",
        "report",
    ]


def forced_stages(stages: list[str], force: bool | list[str]) -> set[str]:
    """force=True: every stage; a list: those stages, a bare foreach name (`tokenize`) meaning all
    its items. A name that is no stage of the flow is refused in one line naming the known ones."""
    if isinstance(force, bool):
        return set(stages) if force else set()
    chosen = set()
    for name in force:
        matching = {stage for stage in stages if stage == name or stage.split("@")[0] == name}
        if not matching:
            raise PipelineError(f"--force {name}: no such stage; the flow runs {', '.join(stages)}")
        chosen |= matching
    return chosen


def first_to_start(stages: list[str], stale: set[str], forced: set[str]) -> int:
    """Index of the first stage that must start (stale or forced); from it on every stage is
    started and left to DVC, since a stage that reruns may change what the later ones read."""
    return next((i for i, stage in enumerate(stages) if stage in stale or stage in forced), len(stages))


@flow(name="llm-pipeline", log_prints=True)
def pipeline(project_dir: str = str(PROJECT_DIR), force: bool | list[str] = False, push: bool = False) -> dict:
    """One pipeline execution: one parent MLflow run, one nested run per stage that ran.

    fetch always runs; when the snapshot it writes is unchanged, every later stage is up to
    date and skipped (a nightly on unchanged data trains nothing). force: True reruns every stage, a list of stage
    names reruns those even if up to date. push: `dvc push` the outputs at the end.
    A second run in the same project while one is running is refused (one line naming it).
    """
    stages = pipeline_stages(project_dir)
    forced = forced_stages(stages, force)
    with in_directory(project_dir), pipeline_lock(project_dir, lock_holder()):
        # tracking defaults (mlflow.db) are relative to the project
        parent = runs.start_pipeline_run("pipeline")
        results: dict[str, dict] = {}
        try:
            # Sequential on purpose: `dvc repro` holds a repo-wide lock, so concurrent stages
            # (foreach items included) would fail on it; each is still its own Prefect task.
            # After fetch, one `dvc status`: a stage it finds up to date, with nothing before it
            # rerun, is not started at all (a nightly on unchanged data: one status call instead
            # of a `dvc repro` per stage). Once a stage reruns, every later one asks DVC itself.
            fetch, *after = stages
            results[fetch] = run_stage(fetch, project_dir, parent, fetch in forced)
            start = first_to_start(after, stale_stages(project_dir), forced)
            for stage in after[:start]:
                get_run_logger().info("%s: up to date (dvc status), not started", stage)
                results[stage.replace("@", "-")] = stage_metrics(project_dir, stage)
            for stage in after[start:]:
                results[stage.replace("@", "-")] = run_stage(stage, project_dir, parent, stage in forced)
            if "report" in after[start:]:  # a new summary; an unchanged one stays with the run that made it
                runs.log_to_run(
                    parent, [Path(project_dir) / "reports" / "summary.md", Path(project_dir) / "reports" / "figures"]
                )
            if push:
                push_outputs(project_dir)
        except BaseException:
            runs.end_pipeline_run(parent, status="FAILED")
            raise
        runs.end_pipeline_run(
            parent,
            metrics={
                f"{stage}/{key}": value
                for stage, metrics in results.items()
                for key, value in metrics.items()
                if isinstance(value, (int, float))
            },
        )
    return results


def lock_holder() -> dict[str, str]:
    """Who holds the project lock, for the refusal of a second run: this flow run, if any."""
    from prefect.runtime import deployment, flow_run

    return {"flow_run": str(flow_run.name or ""), "deployment": str(deployment.name or "")}


def in_directory(path: str) -> contextlib.chdir:
    """The project as the working directory for the block (tracking defaults are relative to it)."""
    return contextlib.chdir(path)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Run the whole pipeline once (fetch -> ... -> report), no server: each stage is "
        "`dvc repro -s <stage>`, so only what changed reruns. Deployments: see prefect.yaml.",
    )
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help="the project (default: this checkout)")
    parser.add_argument(
        "--force",
        nargs="*",
        metavar="STAGE",
        help="rerun stages even if DVC says they are up to date: every stage, or the ones named "
        "(e.g. `--force evaluate tokenize@bpe`; `tokenize` means all its items)",
    )
    parser.add_argument("--push", action="store_true", help="`dvc push` every output to the DVC remote at the end")
    args = parser.parse_args(argv)
    force: bool | list[str] = True if args.force == [] else (args.force or False)  # `--force` alone: all
    forced_stages(pipeline_stages(args.project_dir), force)  # a bad name: one line, before Prefect starts
    pipeline(project_dir=args.project_dir, force=force, push=args.push)


if __name__ == "__main__":
    try:
        main()
    except PipelineError as exc:  # e.g. the project is locked by a running pipeline: one line
        print(f"llm-pipeline: error: {exc}", file=sys.stderr)
        sys.exit(2)
