"""MLflow tracking: the only module that imports mlflow.

Defaults keep everything inside the project: a sqlite database `mlflow.db` and an artifact
folder `mlartifacts/`. Override with the usual env vars:

  MLFLOW_TRACKING_URI           e.g. http://127.0.0.1:5000 or sqlite:////abs/path/mlflow.db
  MLFLOW_EXPERIMENT_NAME        default "llm-pipeline"
  LLM_PIPELINE_ARTIFACT_ROOT    artifact folder for a newly created experiment
  LLM_PIPELINE_PARENT_RUN_ID    set by the Prefect flow: stage runs nest under this run
  LLM_PIPELINE_TRACKING=off     disable tracking (e.g. a GPU box without mlflow); without it,
                                a missing or broken mlflow is an error
  LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H  hours after which a RUNNING run opened on another host
                                counts as dead (default 168; 0: never)

On an http(s) URI the MLflow client's retries are bounded (MLFLOW_HTTP_REQUEST_MAX_RETRIES=4,
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, MLFLOW_HTTP_REQUEST_TIMEOUT=30: about 15 s before a call to a
server that went away fails, instead of MLflow's 4 minutes); set those variables to override.
A tracking call that fails during a stage ends it with one PipelineError line naming the URI.

No zombie runs: every run is tagged with its owner (host, pid, process start time); opening a
run marks KILLED the earlier RUNNING runs of the same name whose owner is gone, tagging each
with its successor and the new run with the runs it replaced (`replace_dead_runs`).

Training code never imports this module directly; stages pass it a logger. In
multi-process training only global rank zero talks to MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import disk_faults

DEFAULT_EXPERIMENT = "llm-pipeline"
PARENT_RUN_ENV = "LLM_PIPELINE_PARENT_RUN_ID"
# without it the MLflow UI opens an experiment on the GenAI traces overview (empty here), not its runs
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


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

    bound_http_retries()
    check_reachable(tracking_uri())  # once per URI and process: before any call that would retry
    return MlflowClient(tracking_uri=tracking_uri())


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ***, for messages and logs."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


@functools.cache
def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when a tracking server does not answer: the MLflow client would
    retry for minutes and end in a traceback, after the stage had done its expensive work."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    parts = urllib.parse.urlsplit(uri)  # urllib reads user:password@ as part of the host name: send it as basic auth
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(f"{url.rstrip('/')}/health")
    if parts.username is not None:
        import base64

        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", f"Basic {base64.b64encode(userinfo.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(
            f"MLFLOW_TRACKING_URI {redact_uri(uri)}: the tracking server does not answer ({reason}); start it "
            "(make serve), or unset MLFLOW_TRACKING_URI to track into the project's mlflow.db"
        ) from None


# --- Faults: bounded HTTP retries, tracking failures as one line, runs whose process died

HTTP_RETRY_DEFAULTS = {  # MLflow's own: 7 retries, factor 2, 120 s (minutes before a dead server fails)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
OWNER_HOST, OWNER_PID, OWNER_START = "pipeline.owner.host", "pipeline.owner.pid", "pipeline.owner.start_time"
SUCCESSOR_TAG = "pipeline.successor_run_id"  # on a run marked KILLED: the run that replaced it
KILLED_REASON_TAG = "pipeline.killed_reason"
REPLACED_TAG = "pipeline.replaced_run_ids"  # on the new run: the runs it marked KILLED, comma-separated
INCOMPLETE_TAG = "pipeline.incomplete"  # on a model version registered by a run that never finished
FOREIGN_MAX_AGE_ENV = "LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H"
FOREIGN_MAX_AGE_H = 168.0


def bound_http_retries() -> None:
    """Bound the MLflow client's retries on an http(s) URI (values already set are kept)."""
    if tracking_uri().startswith(("http://", "https://")):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if urllib.parse.urlsplit(tracking_uri()).password:  # MLflow prints "View run ... at: <the URI>"
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def as_tracking_fault(exc: BaseException) -> PipelineError | None:
    """A PipelineError naming the (redacted) URI for an exception from MLflow or its HTTP client; else None."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, PipelineError) or not isinstance(exc, (MlflowException, requests.RequestException)):
        return None
    uri = tracking_uri()
    reason = " ".join(str(exc).split()) or type(exc).__name__
    password = urllib.parse.urlsplit(uri).password
    if password:
        reason = reason.replace(password, "***")
    cut = reason if len(reason) <= 300 else f"{reason[:300]}..."
    return PipelineError(
        f"MLFLOW_TRACKING_URI {redact_uri(uri)}: a tracking call failed ({cut}); the run is left "
        "unfinished and unpublished: rerun once the tracking server answers (the rerun marks this run KILLED)"
    )


@contextlib.contextmanager
def tracking_faults() -> Iterator[None]:
    """Turn MLflow's exceptions inside the block (or the decorated function) into one PipelineError line."""
    try:
        yield
    except Exception as exc:
        fault = as_tracking_fault(exc)
        if fault is None:
            raise
        raise fault from None


@contextlib.contextmanager
def _one_attempt() -> Iterator[None]:
    """No retries inside the block, for a last call after a failure (the server may be gone)."""
    key = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    before = os.environ.get(key)
    os.environ[key] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def _process_start_time(pid: int) -> float | None:
    """When the live process `pid` started (seconds since the epoch), or None if there is none."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def owner_tags() -> dict[str, str]:
    """Who opened a run: this host, this process and when it started (a reused pid then differs)."""
    import socket

    started = _process_start_time(os.getpid())
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()), OWNER_START: f"{started:.2f}"}


def foreign_max_age_s() -> float | None:
    raw = os.environ.get(FOREIGN_MAX_AGE_ENV)
    try:
        hours = FOREIGN_MAX_AGE_H if raw in (None, "") else float(raw)
    except ValueError:
        raise PipelineError(f"{FOREIGN_MAX_AGE_ENV}={raw!r}: not a number of hours (0: never)") from None
    return hours * 3600 if hours > 0 else None


def owner_gone(tags: Mapping[str, str], started_ms: int, *, host: str, now_s: float) -> str | None:
    """Why the process that opened a RUNNING run is gone, or None when it may still be running.

    On this host: gone unless a live process has that pid and that start time (a reused pid has
    another). A run from another host (or one with no owner tags, from before they existed) is
    left alone unless it was opened more than LLM_PIPELINE_FOREIGN_RUN_MAX_AGE_H hours ago."""
    owner_host, pid, started = tags.get(OWNER_HOST), tags.get(OWNER_PID), tags.get(OWNER_START)
    if owner_host == host and pid and started:
        now_started = _process_start_time(int(pid)) if pid.isdigit() else None
        if now_started is not None and abs(now_started - float(started)) < 0.05:
            return None
        return f"its process {pid} on {host} is gone"
    max_age, age_s = foreign_max_age_s(), now_s - started_ms / 1000
    if max_age is not None and age_s > max_age:
        where = f"on {owner_host}" if owner_host else "with no owner tags"
        return f"opened {age_s / 3600:.0f} h ago {where} (over {FOREIGN_MAX_AGE_ENV}={max_age / 3600:g})"
    return None


def mark_versions_incomplete(client: Any, run_id: str, why: str) -> None:
    """Tag the model versions a run registered as incomplete: the run did not finish."""
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        client.set_model_version_tag(version.name, str(version.version), INCOMPLETE_TAG, f"run {run_id} {why}")


def replace_dead_runs(client: Any, experiment_id: str, run_name: str, successor: str) -> list[str]:
    """Mark KILLED the experiment's RUNNING runs named `run_name` whose owner process is gone: tag
    each with its successor (and why), any model version it registered as incomplete, and tag
    the successor with the runs it replaced. Returns their ids."""
    import socket
    import time

    quoted = run_name.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id], f"attributes.run_name = '{quoted}' and attributes.status = 'RUNNING'", max_results=1000
    )
    replaced, host, now_s = [], socket.gethostname(), time.time()
    for run in runs:
        run_id = run.info.run_id
        why = None if run_id == successor else owner_gone(run.data.tags, run.info.start_time, host=host, now_s=now_s)
        if why is None:
            continue
        client.log_batch(run_id, tags=_run_tags({SUCCESSOR_TAG: successor, KILLED_REASON_TAG: why}))
        client.set_terminated(run_id, status="KILLED")
        mark_versions_incomplete(client, run_id, f"never finished ({why}); superseded by run {successor}")
        replaced.append(run_id)
    if replaced:
        client.set_tag(successor, REPLACED_TAG, ",".join(replaced))
    return replaced


def _experiment_id() -> str:
    client = _client()
    exp = client.get_experiment_by_name(experiment_name())
    if exp is not None:
        for key, value in EXPERIMENT_TAGS.items():  # an experiment made before the tag existed
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    if tracking_uri().startswith(("http://", "https://")) and not os.environ.get("LLM_PIPELINE_ARTIFACT_ROOT"):
        # a tracking server picks the location (its proxied store, `mlflow server --artifacts-destination`):
        # a local folder here would be one that the server's other clients cannot read
        return client.create_experiment(experiment_name(), tags=EXPERIMENT_TAGS)
    return client.create_experiment(experiment_name(), artifact_location=artifact_root(), tags=EXPERIMENT_TAGS)


class StageRun:
    """Handle on one stage's MLflow run (or a no-op when tracking is off)."""

    def __init__(self, run_id: str | None, data_deps: list[tuple[str, str]] | None = None):
        self.run_id = run_id
        self.data_deps = data_deps or []  # (path, DVC hash) of the DVC stage's data deps

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

    def log_datasets(self, manifests: list[Path], context: str) -> None:
        """The run's inputs as MLflow dataset inputs: the DVC stage's data deps (digest: their
        DVC hash) or, with none (ingest's sources, a stage run outside `dvc repro`), the input
        files the stage's manifests list (digest: their sha256, cut to MLflow's 36 characters)."""
        if not self.active:
            return
        entries: list[tuple[str, str, dict[str, str]]] = [(path, digest, {}) for path, digest in self.data_deps]
        if not entries:
            files = [f for m in manifests if m.is_file() for f in _manifest_inputs(m)]
            entries = [(f["path"], f["sha256"][:DIGEST_CHARS], {"sha256": f["sha256"]}) for f in files]
        if entries:
            _log_datasets(entries[:MAX_DATASETS], context)

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
            _client().update_model_version(registered_name, version, description=description)
        for key, value in (tags or {}).items():  # lineage on the version itself, not only on its run
            _client().set_model_version_tag(registered_name, version, key, value)
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
def stage_run(run_name: str, *, tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
    """Open an MLflow run named after the stage, nested under the pipeline run if one is set.

    Earlier runs of that name whose process died are marked KILLED (replace_dead_runs). A failing
    MLflow call inside (the stage's, Lightning's logger's) ends the stage with one PipelineError
    line; the run is then marked FAILED in one attempt, or left for the next run to mark KILLED."""
    if not enabled():
        yield StageRun(None)
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
            _client().log_batch(parent, tags=_run_tags(context))  # the pipeline run: same commit, same flow run
        run = mlflow.start_run(experiment_id=_experiment_id(), run_name=run_name, tags=all_tags)
    try:
        with tracking_faults():
            replace_dead_runs(_client(), run.info.experiment_id, run_name, run.info.run_id)
            yield StageRun(run.info.run_id, data_deps=[(p, d) for p, d in deps if not _is_code(p)])
            tag_versions_with_lineage(run.info.run_id)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        with _one_attempt(), contextlib.suppress(Exception):  # the server may be gone: the next run reaps it
            mark_versions_incomplete(_client(), run.info.run_id, f"ended {status} ({type(exc).__name__})")
        with _one_attempt(), contextlib.suppress(Exception):
            mlflow.end_run(status)
        raise
    with tracking_faults():
        mlflow.end_run()


def start_pipeline_run(run_name: str, tags: Mapping[str, str] | None = None) -> str | None:
    """Create the parent run that groups one pipeline execution's stage runs."""
    if not enabled():
        return None
    with tracking_faults():
        client = _client()
        all_tags = {"pipeline.stage": "pipeline", **(tags or {}), **owner_tags()}
        run = client.create_run(_experiment_id(), run_name=run_name, tags=all_tags)
        replace_dead_runs(client, run.info.experiment_id, run_name, run.info.run_id)
    return run.info.run_id


def end_pipeline_run(run_id: str | None, status: str = "FINISHED", metrics: Mapping[str, float] | None = None) -> None:
    """Close the parent run. A FAILED/KILLED close is one attempt whose own failure is ignored
    (the flow's error is the one to show; the next pipeline run marks this one KILLED)."""
    if run_id is None:
        return
    if status != "FINISHED":
        with _one_attempt(), contextlib.suppress(Exception):
            _client().set_terminated(run_id, status=status)
        return
    with tracking_faults():
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


@tracking_faults()
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


# --- The model registry side of the promotion gate (the decision itself: evaluation/promotion.py)


def model_aliases(name: str) -> dict[str, str]:
    """alias -> version of a registered model; {} when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        model = _client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_version_tags(name: str, version: str) -> dict[str, str]:
    return dict(_client().get_model_version(name, version).tags or {})


def set_model_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_model_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (MLflow moves it off the version that held it)."""
    _client().set_registered_model_alias(name, alias, version)


EVALUATION_NOTE = "\n\nevaluate: "  # where the training description ends and evaluate's note begins


def describe_registered_model(name: str, version: str, *, model: str, version_note: str) -> None:
    """The registered model's description (its headline) and a note appended to the version's
    description, replacing the note a previous evaluation left there."""
    client = _client()
    client.update_registered_model(name, description=model)
    current = client.get_model_version(name, version).description or ""
    trained = current.split(EVALUATION_NOTE)[0].rstrip()
    client.update_model_version(name, version, description=f"{trained}{EVALUATION_NOTE}{version_note}".lstrip())


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
            # models:/ resolves through mlflow's process-wide registry URI (whatever tracking_uri= says)
            mlflow.set_tracking_uri(tracking_uri())
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri())
        except (MlflowException, OSError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            password = urllib.parse.urlsplit(tracking_uri()).password
            reason = reason.replace(password, "***") if password else reason
            where = redact_uri(tracking_uri())  # a password in the URI never reaches a message
            raise PipelineError(f"{uri}: cannot be loaded from {where} ({reason[:300]})") from None
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


# --- Lineage on every run and model version: source commit, DVC hashes of the deps, Prefect ids

PREFECT_FLOW_RUN_ENV = "LLM_PIPELINE_PREFECT_FLOW_RUN_ID"  # set by the flow (flows/pipeline.py stage_env)
PREFECT_DEPLOYMENT_ENV = "LLM_PIPELINE_PREFECT_DEPLOYMENT"
DVC_DEP_TAG = "dvc.dep."  # + the dep's path as dvc.yaml writes it; value: its DVC hash
DIGEST_CHARS = 36  # MLflow's dataset digest column (a DVC directory hash, md5 + ".dir", fills it)
MAX_DATASETS = 100  # dataset inputs per run: a local corpus of many files lists its first ones
# run tags a model version copies from the run that registered it
LINEAGE_TAGS = (
    *("mlflow.source.git.commit", "git.", DVC_DEP_TAG, "prefect."),
    *("tokenizer_sha256", "upstream.", "pretrained_model"),  # set by the stages
)
PACKAGE_DIR = Path(__file__).resolve().parent.name  # deps under it are code, covered by the commit


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd())


def source_tags() -> dict[str, str]:
    """The commit the code ran from (MLflow's standard tag) and whether tracked files differed
    from it (untracked files, e.g. data and reports, do not count); {} outside a git checkout."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run and deployment that ran this stage, when the flow did."""
    pairs = (("prefect.flow_run_id", PREFECT_FLOW_RUN_ENV), ("prefect.deployment", PREFECT_DEPLOYMENT_ENV))
    return {tag: os.environ[env] for tag, env in pairs if os.environ.get(env)}


def dvc_stage_deps() -> list[tuple[str, str]]:
    """(path, DVC hash) of each file/folder dep of the DVC stage running this process, or [].

    `dvc repro` names the stage in DVC_STAGE (and the project in DVC_ROOT) while it holds the
    repo lock; reading dvc.yaml and hashing the deps takes no lock, and DVC's own hash of
    each dep is the one dvc.lock will record for this run. Outside `dvc repro`: [].
    """
    stage_name, root = os.environ.get("DVC_STAGE"), os.environ.get("DVC_ROOT")
    if not stage_name or not root:
        return []
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(root) as repo:
        (stage,) = repo.stage.collect(stage_name)
        deps = [d for d in stage.deps if not isinstance(d, ParamsDependency)]
        return [(str(d.def_path), str(d.get_hash().value)) for d in deps]


def _is_code(path: str) -> bool:
    return Path(path).parts[:1] == (PACKAGE_DIR,)


def _run_tags(tags: Mapping[str, str]):
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]


def tag_versions_with_lineage(run_id: str) -> None:
    """Copy the run's lineage tags onto every model version it registered, so the registry
    alone says where a version came from."""
    client = _client()
    tags = client.get_run(run_id).data.tags
    lineage = {k: v for k, v in tags.items() if k.startswith(LINEAGE_TAGS)}
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        set_model_version_tags(version.name, str(version.version), lineage)


def _manifest_inputs(manifest: Path) -> list[dict[str, Any]]:
    import json

    return [f for f in json.loads(manifest.read_text()).get("inputs", []) if "path" in f and "sha256" in f]


def _log_datasets(entries: list[tuple[str, str, dict[str, str]]], context: str) -> None:
    """(source path, digest, tags) -> one MLflow dataset input each, named after its path."""
    import mlflow
    from mlflow.data.dataset import Dataset
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]  # made at import

    datasets: list[Dataset | None] = [
        # MetaDataset: metadata only (name, digest, source), nothing loaded; its profile is None
        MetaDataset(LocalArtifactDatasetSource(path), name=path, digest=digest)  # type: ignore[abstract]
        for path, digest, _ in entries
    ]
    mlflow.log_inputs(datasets, contexts=[context] * len(entries), tags_list=[tags or None for *_, tags in entries])
