"""Where tracking goes and whether it is on: the environment, the MLflow client, the experiment."""

from __future__ import annotations

import functools
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from llm_pipeline.errors import PipelineError

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


def mlflow_client():
    """An MlflowClient for tracking_uri(), after bounding its retries and checking the server answers."""
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


HTTP_RETRY_DEFAULTS = {  # MLflow's own: 7 retries, factor 2, 120 s (minutes before a dead server fails)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def bound_http_retries() -> None:
    """Bound the MLflow client's retries on an http(s) URI (values already set are kept)."""
    if tracking_uri().startswith(("http://", "https://")):
        for key, value in HTTP_RETRY_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if urllib.parse.urlsplit(tracking_uri()).password:  # MLflow prints "View run ... at: <the URI>"
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def experiment_id() -> str:
    """The project's experiment, created (with EXPERIMENT_TAGS) on first use."""
    client = mlflow_client()
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


def run_tags(tags: Mapping[str, str]):
    """Tags as MLflow RunTag entities, for client.log_batch."""
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]
