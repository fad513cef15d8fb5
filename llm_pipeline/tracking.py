"""MLflow tracking: the only module that imports mlflow.

Defaults keep everything inside the project: a sqlite database `mlflow.db` and an artifact
folder `mlartifacts/`. Override with the usual env vars:

  MLFLOW_TRACKING_URI           e.g. http://127.0.0.1:5000 or sqlite:////abs/path/mlflow.db
  MLFLOW_EXPERIMENT_NAME        default "llm-pipeline"
  LLM_PIPELINE_ARTIFACT_ROOT    artifact folder for a newly created experiment
  LLM_PIPELINE_PARENT_RUN_ID    set by the Prefect flow: stage runs nest under this run
  LLM_PIPELINE_TRACKING=off     disable tracking (e.g. a GPU box without mlflow); without it,
                                a missing or broken mlflow is an error

Training code never imports this module directly; stages pass it a logger. In
multi-process training only global rank zero talks to MLflow.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError

DEFAULT_EXPERIMENT = "llm-pipeline"
PARENT_RUN_ENV = "LLM_PIPELINE_PARENT_RUN_ID"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def artifact_root() -> str:
    root = os.environ.get("LLM_PIPELINE_ARTIFACT_ROOT") or str(Path.cwd() / "mlartifacts")
    return Path(root).resolve().as_uri()


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def is_global_rank_zero() -> bool:
    """True unless this process is a non-zero rank of a multi-process launch (Lightning's own
    launcher and torchrun set RANK/LOCAL_RANK/NODE_RANK; SLURM's srun sets SLURM_PROCID)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def enabled() -> bool:
    """Whether this process tracks. Tracking is on unless switched off explicitly: a missing or
    broken mlflow is an error, not a silent run that records nothing."""
    if os.environ.get("LLM_PIPELINE_TRACKING", "on").lower() in {"off", "0", "false"}:
        return False
    if not is_global_rank_zero():
        return False
    try:
        import mlflow  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing at import time
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise PipelineError(
            f"mlflow cannot be imported ({type(exc).__name__}: {reason}); install it or set LLM_PIPELINE_TRACKING=off"
        ) from None
    return True


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def _experiment_id() -> str:
    client = _client()
    exp = client.get_experiment_by_name(experiment_name())
    if exp is not None:
        return exp.experiment_id
    if tracking_uri().startswith(("http://", "https://")) and not os.environ.get("LLM_PIPELINE_ARTIFACT_ROOT"):
        # a tracking server picks the location (its proxied store, `mlflow server --artifacts-destination`):
        # a local folder here would be one that the server's other clients cannot read
        return client.create_experiment(experiment_name())
    return client.create_experiment(experiment_name(), artifact_location=artifact_root())


class StageRun:
    """Handle on one stage's MLflow run (or a no-op when tracking is off)."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.active:
            import mlflow

            # MLflow caps a param value at 6000 chars; configs never come close.
            mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.active:
            import mlflow

            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or folder; one that is missing is an error (the stage promised it)."""
        if self.active:
            if not Path(path).exists():
                raise PipelineError(
                    f"{path}: artifact to log does not exist (the stage listed it but did not write it)"
                )
            import mlflow

            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path)
            else:
                mlflow.log_artifact(str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.active:
            import mlflow

            mlflow.set_tags(dict(tags))

    def lightning_logger(self):
        """A Lightning MLFlowLogger writing into this run, or None when tracking is off."""
        if not self.active:
            return None
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
        if not self.active:
            return None
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
        with warnings.catch_warnings():
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
            _client().update_model_version(registered_name, version, description=description)
        for key, value in (tags or {}).items():  # lineage on the version itself, not only on its run
            _client().set_model_version_tag(registered_name, version, key, value)
        return version


@contextlib.contextmanager
def stage_run(run_name: str, *, tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
    """Open an MLflow run named after the stage, nested under the pipeline run if one is set."""
    if not enabled():
        yield StageRun(None)
        return
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    all_tags = {"pipeline.stage": run_name.split("-")[0], **(tags or {})}
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(experiment_id=_experiment_id(), run_name=run_name, tags=all_tags) as run:
        yield StageRun(run.info.run_id)


def start_pipeline_run(run_name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """Create the parent run that groups one pipeline execution's stage runs."""
    if not enabled():
        return None
    run = _client().create_run(_experiment_id(), run_name=run_name, tags={"pipeline.stage": "pipeline", **(tags or {})})
    return run.info.run_id


def end_pipeline_run(run_id: str | None, status: str = "FINISHED", metrics: Mapping[str, float] | None = None) -> None:
    if run_id is None:
        return
    client = _client()
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id, status=status)


def search_runs(filter_string: str = "") -> list[Any]:
    """Runs of the project's experiment (used by tests and the report)."""
    client = _client()
    exp = client.get_experiment_by_name(experiment_name())
    return [] if exp is None else client.search_runs([exp.experiment_id], filter_string)


def load_registered_model(name: str, version: str | int = "latest"):
    """The registered model as MLflow's pyfunc: `.predict(pd.DataFrame({"text": [...]}))`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def registered_versions(name: str) -> list[Any]:
    return list(_client().search_model_versions(f"name='{name}'"))


def model_version_of_run(run_id: str | None) -> tuple[str, str] | None:
    """(registered name, version) of the model version a run registered, for lineage; None if none."""
    if run_id is None or not enabled():
        return None
    versions = _client().search_model_versions(f"run_id='{run_id}'")
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return newest.name, str(newest.version)


def log_to_run(run_id: str | None, paths: list[Path]) -> None:
    """Attach files or folders (that exist) to a run by id, e.g. the report to the pipeline's parent run."""
    if run_id is None:
        return
    client = _client()
    for path in paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            client.log_artifact(run_id, str(path))


# --- Registered models as MLflow pyfuncs, and model URIs back to their folders (export, generate)

PYFUNC_LOADER = "llm_pipeline.mlflow_pyfunc"  # the flavor module MLflow imports to load a registered model
# the pyfunc's predict params (names of llm_pipeline.inference.PredictOptions) and their MLflow types
PYFUNC_PARAMS = {
    "max_new_tokens": "long",
    "temperature": "double",
    "top_k": "long",
    "num_beams": "long",
    "no_repeat_ngram_size": "long",
    "seed": "long",
}
MODEL_URI_SCHEMES = ("models:/", "runs:/")


@contextlib.contextmanager
def model_folder(uri: str) -> Iterator[Path]:
    """The stage model folder (model.json, model.safetensors, tokenizer.json, manifest.json) behind
    `uri`: models:/<name>@<alias>, models:/<name>/<version> or runs:/<run id>/model (the pyfunc's
    data, downloaded into a temporary folder removed on exit), or a local folder (a stage's
    output, or an MLflow model saved or downloaded there)."""
    if not uri.startswith(MODEL_URI_SCHEMES):
        yield _folder_of(Path(uri), uri)
        return
    import tempfile

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="llm-pipeline-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri())
        except (MlflowException, OSError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise PipelineError(f"{uri}: cannot be loaded from {tracking_uri()} ({reason[:300]})") from None
        yield _folder_of(Path(local), uri)


def _folder_of(path: Path, uri: str) -> Path:
    """`path` itself when it holds a saved model, else the data folder of the MLflow pyfunc there."""
    if (path / "model.json").is_file():
        return path
    mlmodel = path / "MLmodel"
    if not mlmodel.is_file():
        raise PipelineError(f"{uri}: no model there (no stage model folder with model.json, no MLflow model)")
    import yaml

    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    data = path / str(flavor.get("data", ""))
    if flavor.get("loader_module") != PYFUNC_LOADER or not (data / "model.json").is_file():
        raise PipelineError(
            f"{uri}: an MLflow model but not one of this pipeline's ({PYFUNC_LOADER} pyfunc with a model folder); "
            "versions registered before models became pyfuncs hold a torch pickle only: rerun the stage"
        )
    return data
