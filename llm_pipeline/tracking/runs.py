"""A stage's MLflow run: `stage_run` opens it and yields a Tracker (the stage's handle: params,
metrics, artifacts, datasets, Lightning's logger, model registration), or a NullTracker when
tracking is off; and the pipeline's parent run that groups one execution's stage runs."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import disk_faults
from llm_pipeline.tracking.client import (
    PARENT_RUN_ENV,
    bound_http_retries,
    enabled,
    experiment_id,
    experiment_name,
    mlflow_client,
    run_tags,
    tracking_uri,
)
from llm_pipeline.tracking.dead_runs import mark_versions_incomplete, owner_tags, replace_dead_runs
from llm_pipeline.tracking.faults import one_attempt, tracking_faults
from llm_pipeline.tracking.lineage_tags import (
    DIGEST_CHARS,
    DVC_DEP_TAG,
    MAX_DATASETS,
    dvc_stage_deps,
    is_code,
    log_datasets,
    manifest_inputs,
    prefect_tags,
    source_tags,
    tag_versions_with_lineage,
)
from llm_pipeline.tracking.registry import PYFUNC_LOADER, PYFUNC_PARAMS


class Tracker:
    """What a stage does with its run (`run(cfg, tracker)`). This base does nothing (the null
    object: tracking off, or a rank other than zero); StageRun overrides every call to write to
    MLflow, so stages never check which one they got."""

    run_id: str | None = None  # the MLflow run's id; None when nothing is tracked
    active = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_datasets(self, manifests: list[Path], context: str) -> None:
        pass

    def lightning_logger(self) -> Any:
        return None

    def register_model(
        self,
        folder: str | Path | None,
        registered_name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        return None


class NullTracker(Tracker):
    """The Tracker of a process that does not track: every call is the base's no-op."""


NULL_TRACKER = NullTracker()  # a default argument for stages run without the runner (tests, benches)


class StageRun(Tracker):
    """The Tracker of one stage's open MLflow run."""

    active = True

    def __init__(self, run_id: str, data_deps: list[tuple[str, str]] | None = None):
        self.run_id: str | None = run_id
        self.data_deps = data_deps or []  # (path, DVC hash) of the DVC stage's data deps

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        # MLflow caps a param value at 6000 chars; configs never come close.
        mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder; one that is missing is an error (the stage promised it)."""
        if not Path(path).exists():
            raise PipelineError(f"{path}: artifact to log does not exist (the stage listed it but did not write it)")
        import mlflow

        if Path(path).is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def log_datasets(self, manifests: list[Path], context: str) -> None:
        """The run's inputs as MLflow dataset inputs: the DVC stage's data deps (digest: their
        DVC hash) or, with none (ingest's sources, a stage run outside `dvc repro`), the input
        files the stage's manifests list (digest: their sha256, cut to MLflow's 36 characters)."""
        entries: list[tuple[str, str, dict[str, str]]] = [(path, digest, {}) for path, digest in self.data_deps]
        if not entries:
            files = [f for m in manifests if m.is_file() for f in manifest_inputs(m)]
            entries = [(f["path"], f["sha256"][:DIGEST_CHARS], {"sha256": f["sha256"]}) for f in files]
        if entries:
            log_datasets(entries[:MAX_DATASETS], context)

    def lightning_logger(self):
        """A Lightning MLFlowLogger writing into this run."""
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(
            experiment_name=experiment_name(), tracking_uri=tracking_uri(), run_id=self.run_id, log_model=False
        )

    def register_model(
        self,
        folder: str | Path | None,
        registered_name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Log a stage's model folder as an MLflow pyfunc and register it; returns the new model
        version (or None).

        The folder (model.safetensors + model.json, tokenizer.json, manifest.json) is the
        model's data; MLflow loads it with PYFUNC_LOADER, whose predict takes a DataFrame with a
        `text` column and returns texts or labels, at any input length. No input schema: a
        template's extra columns (translation's `lang`) pass through. Explicit pip requirements
        skip MLflow's slow inference of them.
        """
        if folder is None or not (Path(folder) / "model.json").is_file():
            raise PipelineError(f"{folder}: no saved model (model.json) to register as {registered_name}")
        import mlflow
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        signature = ModelSignature(
            outputs=Schema([ColSpec("string")]),
            # default None: the model's own default (llm_pipeline.inference.PredictOptions)
            params=ParamSchema([ParamSpec(name, dtype, None) for name, dtype in PYFUNC_PARAMS.items()]),
        )
        full_disk = disk_faults(  # a local artifact store on a full disk: one line, naming the file
            urllib.parse.unquote(urllib.parse.urlsplit(mlflow.get_artifact_uri()).path),
            note=f"no version of {registered_name} was registered; its earlier versions are intact",
            named_first=True,
        )
        with _no_half_copied_model(), warnings.catch_warnings(), full_disk:
            # an input example would make MLflow run the model at logging time, to check the signature
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model",
                loader_module=PYFUNC_LOADER,
                data_path=str(folder),
                signature=signature,
                registered_model_name=registered_name,
                pip_requirements=[f"torch>={torch.__version__.split('+')[0]}", "llm-pipeline"],
            )
        version = str(info.registered_model_version)
        if description:
            mlflow_client().update_model_version(registered_name, version, description=description)
        for key, value in (tags or {}).items():  # lineage on the version itself, not only on its run
            mlflow_client().set_model_version_tag(registered_name, version, key, value)
        return version


def _last_logged_model():
    """mlflow.last_logged_model(), or None: it looks up a process-wide id in the current store,
    which fails ("Logged model with ID ... not found") when that model was logged in another one."""
    import mlflow

    try:
        return mlflow.last_logged_model()
    except mlflow.MlflowException:
        return None


@contextlib.contextmanager
def _no_half_copied_model() -> Iterator[None]:
    """A log_model that fails (a full disk) leaves a FAILED logged model, no version: remove the
    files it half-copied into a local artifact store, so nothing truncated stays there."""
    before = _last_logged_model()
    try:
        yield
    except BaseException:
        model = _last_logged_model()
        new = model is not None and (before is None or model.model_id != before.model_id)
        location = urllib.parse.urlsplit(model.artifact_location) if new and model is not None else None
        if location is not None and location.scheme in ("", "file"):
            import shutil

            shutil.rmtree(urllib.parse.unquote(location.path), ignore_errors=True)
        raise


@contextlib.contextmanager
def stage_run(run_name: str, *, tags: Mapping[str, str] | None = None) -> Iterator[Tracker]:
    """Open an MLflow run named after the stage, nested under the pipeline run if one is set.

    Earlier runs of that name whose process died are marked KILLED (replace_dead_runs). A failing
    MLflow call inside (the stage's, Lightning's logger's) ends the stage with one PipelineError
    line; the run is then marked FAILED in one attempt, or left for the next run to mark KILLED."""
    if not enabled():
        yield NullTracker()
        return
    import mlflow

    bound_http_retries()
    mlflow.set_tracking_uri(tracking_uri())
    deps = dvc_stage_deps()
    context = {**source_tags(), **prefect_tags()}
    dep_tags = {f"{DVC_DEP_TAG}{path}": digest for path, digest in deps}
    all_tags = {"pipeline.stage": run_name.split("-")[0], **context, **dep_tags, **(tags or {}), **owner_tags()}
    parent = os.environ.get(PARENT_RUN_ENV)
    with tracking_faults():
        if parent:
            all_tags["mlflow.parentRunId"] = parent
            mlflow_client().log_batch(parent, tags=run_tags(context))  # the pipeline run: same commit, same flow run
        run = mlflow.start_run(experiment_id=experiment_id(), run_name=run_name, tags=all_tags)
    try:
        with tracking_faults():
            replace_dead_runs(mlflow_client(), run.info.experiment_id, run_name, run.info.run_id)
            yield StageRun(run.info.run_id, data_deps=[(p, d) for p, d in deps if not is_code(p)])
            tag_versions_with_lineage(run.info.run_id)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with one_attempt(), contextlib.suppress(Exception):  # the server may be gone: the next run reaps it
            mark_versions_incomplete(mlflow_client(), run.info.run_id, f"ended {status} ({type(exc).__name__})")
        with one_attempt(), contextlib.suppress(Exception):
            mlflow.end_run(status)
        raise
    with tracking_faults():
        mlflow.end_run()


def start_pipeline_run(run_name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """Create the parent run that groups one pipeline execution's stage runs."""
    if not enabled():
        return None
    with tracking_faults():
        client = mlflow_client()
        all_tags = {"pipeline.stage": "pipeline", **(tags or {}), **owner_tags()}
        run = client.create_run(experiment_id(), run_name=run_name, tags=all_tags)
        replace_dead_runs(client, run.info.experiment_id, run_name, run.info.run_id)
    return run.info.run_id


def end_pipeline_run(run_id: str | None, status: str = "FINISHED", metrics: Mapping[str, float] | None = None) -> None:
    """Close the parent run. A FAILED/KILLED close is one attempt whose own failure is ignored
    (the flow's error is the one to show; the next pipeline run marks this one KILLED)."""
    if run_id is None:
        return
    if status != "FINISHED":
        with one_attempt(), contextlib.suppress(Exception):
            mlflow_client().set_terminated(run_id, status=status)
        return
    with tracking_faults():
        client = mlflow_client()
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value))
        client.set_terminated(run_id, status=status)


@tracking_faults()
def log_to_run(run_id: str | None, paths: list[Path]) -> None:
    """Attach files or folders (that exist) to a run by id, e.g. the report to the pipeline's parent run."""
    if run_id is None:
        return
    client = mlflow_client()
    for path in paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            client.log_artifact(run_id, str(path))


def search_runs(filter_string: str = "") -> list[Any]:
    """Runs of the project's experiment (tests read what a stage recorded through it)."""
    client = mlflow_client()
    exp = client.get_experiment_by_name(experiment_name())
    return [] if exp is None else client.search_runs([exp.experiment_id], filter_string)
