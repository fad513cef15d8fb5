"""Lineage on every run and model version: the source commit, the DVC hashes of the stage's
deps, the Prefect flow run and deployment, and the data deps as MLflow dataset inputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llm_pipeline.tracking.client import mlflow_client
from llm_pipeline.tracking.registry import set_model_version_tags

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
PACKAGE_DIR = Path(__file__).resolve().parents[1].name  # deps under it are code, covered by the commit


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


def is_code(path: str) -> bool:
    """Whether a dvc.yaml dep path is the package's code (covered by the commit, not a dataset)."""
    return Path(path).parts[:1] == (PACKAGE_DIR,)


def tag_versions_with_lineage(run_id: str) -> None:
    """Copy the run's lineage tags onto every model version it registered, so the registry
    alone says where a version came from."""
    client = mlflow_client()
    tags = client.get_run(run_id).data.tags
    lineage = {k: v for k, v in tags.items() if k.startswith(LINEAGE_TAGS)}
    for version in client.search_model_versions(f"run_id='{run_id}'"):
        set_model_version_tags(version.name, str(version.version), lineage)


def manifest_inputs(manifest: Path) -> list[dict[str, Any]]:
    import json

    return [f for f in json.loads(manifest.read_text()).get("inputs", []) if "path" in f and "sha256" in f]


def log_datasets(entries: list[tuple[str, str, dict[str, str]]], context: str) -> None:
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
