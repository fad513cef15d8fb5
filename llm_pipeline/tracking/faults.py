"""Tracking failures as one PipelineError line naming the (redacted) URI, and last calls made
without the client's retries (after a failure, when the server may be gone)."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import Iterator

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import redact_uri, tracking_uri


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
def one_attempt() -> Iterator[None]:
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
