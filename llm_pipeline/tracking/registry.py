"""Registered models: versions, aliases, tags and descriptions (the registry side of the promotion
gate; the decision itself is evaluation/promotion.py), and model URIs back to their folders."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import enabled, mlflow_client, redact_uri, tracking_uri


def load_registered_model(name: str, version: str | int = "latest"):
    """The registered model as MLflow's pyfunc: `.predict(pd.DataFrame({"text": [...]}))`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def registered_versions(name: str) -> list[Any]:
    return list(mlflow_client().search_model_versions(f"name='{name}'"))


def model_version_of_run(run_id: str | None) -> tuple[str, str] | None:
    """(registered name, version) of the model version a run registered, for lineage; None if none."""
    if run_id is None or not enabled():
        return None
    versions = mlflow_client().search_model_versions(f"run_id='{run_id}'")
    if not versions:
        return None
    newest = max(versions, key=lambda v: int(v.version))
    return newest.name, str(newest.version)


def model_aliases(name: str) -> dict[str, str]:
    """alias -> version of a registered model; {} when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def model_version_tags(name: str, version: str) -> dict[str, str]:
    return dict(mlflow_client().get_model_version(name, version).tags or {})


def set_model_version_tags(name: str, version: str, tags: Mapping[str, str]) -> None:
    client = mlflow_client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_model_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` at `version` (MLflow moves it off the version that held it)."""
    mlflow_client().set_registered_model_alias(name, alias, version)


EVALUATION_NOTE = "\n\nevaluate: "  # where the training description ends and evaluate's note begins


def describe_registered_model(name: str, version: str, *, model: str, version_note: str) -> None:
    """The registered model's description (its headline) and a note appended to the version's
    description, replacing the note a previous evaluation left there."""
    client = mlflow_client()
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
