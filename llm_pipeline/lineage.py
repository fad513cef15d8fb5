"""Lineage of a registered model version, read from MLflow alone: a module that imports mlflow
(besides llm_pipeline/tracking/), used by `llm-pipeline lineage` only, so no stage depends on it.

From the version to the run that registered it, then from run to run through each run's
`upstream.<stage>` tags (finetune -> pretrain -> tokenize -> ingest, and whatever comes
before ingest), to the raw source files and their sha256 that the ingest run's manifest
(logged as its artifact) lists. Every run carries its commit, the DVC hashes of its deps and
the Prefect ids (llm_pipeline/tracking/runs.py stage_run).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from llm_pipeline.errors import PipelineError
from llm_pipeline.tracking.client import mlflow_client
from llm_pipeline.tracking.lineage_tags import DVC_DEP_TAG, is_code
from llm_pipeline.tracking.registry import model_aliases, registered_versions

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
SOURCE_STAGES = ("ingest",)  # the stage whose inputs are the raw source files
SHOWN_TAGS = {  # run tag -> its label in the printout
    "mlflow.source.git.commit": "commit",
    "git.dirty": "dirty",
    "prefect.flow_run_id": "prefect flow run",
    "prefect.deployment": "deployment",
}


@dataclass
class RunStep:
    name: str
    run_id: str
    stage: str
    tags: dict[str, str]
    data_deps: dict[str, str]  # path -> DVC hash (deps outside the package: code is the commit)
    sources: list[dict[str, Any]] = field(default_factory=list)  # ingest: its input files with sha256
    upstream: list[RunStep] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # upstream run ids the store does not have


@dataclass
class ModelLineage:
    uri: str
    name: str
    version: str
    aliases: list[str]
    version_tags: dict[str, str]
    run: RunStep | None


def resolve(uri: str) -> tuple[str, str, list[str], dict[str, str], str | None]:
    """(name, version, its aliases, its tags, the run that registered it) of a models:/ URI."""
    match = URI.match(uri)
    if not match:
        raise PipelineError(f"{uri}: not a model URI; use models:/<name>@<alias> or models:/<name>/<version>")
    name = match["name"]
    aliases = model_aliases(name)
    versions = {str(v.version): v for v in registered_versions(name)}
    if not versions:
        raise PipelineError(f"{uri}: no registered model named {name!r}")
    version = match["version"] or aliases.get(match["alias"] or "")
    if version is None:
        known = ", ".join(sorted(aliases)) or "none"
        raise PipelineError(f"{uri}: model {name!r} has no alias {match['alias']!r} (its aliases: {known})")
    if version not in versions:
        raise PipelineError(f"{uri}: model {name!r} has no version {version} (versions: {', '.join(versions)})")
    mv = versions[version]
    held = sorted(alias for alias, v in aliases.items() if v == version)
    return name, version, held, dict(mv.tags or {}), mv.run_id


def trace_model(uri: str) -> ModelLineage:
    name, version, aliases, tags, run_id = resolve(uri)
    client = mlflow_client()
    return ModelLineage(uri, name, version, aliases, tags, _trace_run(client, run_id, set()) if run_id else None)


def _trace_run(client, run_id: str, seen: set[str]) -> RunStep:
    seen.add(run_id)
    run = client.get_run(run_id)
    tags = dict(run.data.tags)
    deps = {
        k.removeprefix(DVC_DEP_TAG): v
        for k, v in tags.items()
        if k.startswith(DVC_DEP_TAG) and not is_code(k.removeprefix(DVC_DEP_TAG))
    }
    stage = tags.get("pipeline.stage", "")
    step = RunStep(run.info.run_name or run_id, run_id, stage, tags, deps)
    if stage in SOURCE_STAGES:
        step.sources = _sources(client, run)
    for key in sorted(k for k in tags if k.startswith("upstream.")):
        upstream = tags[key]
        if upstream in ("", "None") or upstream in seen:
            continue
        try:
            step.upstream.append(_trace_run(client, upstream, seen))
        except MlflowException as exc:  # deleted, or from another tracking store: say so, keep the rest
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            step.missing.append(f"{key}: run {upstream} not found")
    return step


def _sources(client, run) -> list[dict[str, Any]]:
    """The ingest run's input files with sha256: its manifest artifact, else its dataset inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "manifest.json", tmp)
            return [f for f in json.loads(Path(path).read_text()).get("inputs", []) if "sha256" in f]
        except (MlflowException, OSError):  # no manifest artifact: the dataset inputs name the same files
            pass
    out = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        sha = next((t.value for t in item.tags if t.key == "sha256"), item.dataset.digest)
        out.append({"path": item.dataset.name, "sha256": sha})
    return out


def render(lineage: ModelLineage) -> str:
    aliases = f" (aliases: {', '.join(lineage.aliases)})" if lineage.aliases else ""
    lines = [f"{lineage.uri} = {lineage.name} version {lineage.version}{aliases}"]
    promotion = {k: v for k, v in lineage.version_tags.items() if k.startswith("promotion.")}
    for key in ("promotion.decision", "promotion.metric", "promotion.score", "promotion.test_set", "promotion.reason"):
        if key in promotion:
            lines.append(f"  {key.removeprefix('promotion.')}: {promotion[key]}")
    if lineage.run is None:
        lines.append("  registered outside a run: no lineage")
    else:
        _render_run(lineage.run, lines, depth=0)
    return "\n".join(lines)


def _render_run(step: RunStep, lines: list[str], depth: int) -> None:
    pad = "  " * depth
    lines.append(f"{pad}{'<- ' if depth else ''}{step.name}  (stage {step.stage or '?'}, run {step.run_id})")
    pad += "     " if depth else "  "
    shown = [f"{label} {step.tags[tag]}" for tag, label in SHOWN_TAGS.items() if tag in step.tags]
    if shown:
        lines.append(pad + "  ".join(shown))
    for key in sorted(k for k in step.tags if k.startswith("tokenizer_sha256") or k == "pretrained_model"):
        lines.append(f"{pad}{key} {step.tags[key]}")
    for path, digest in sorted(step.data_deps.items()):
        lines.append(f"{pad}dep {path}  {digest}")
    for source in step.sources:
        lines.append(f"{pad}source {source['path']}  sha256 {source['sha256']}")
    for note in step.missing:
        lines.append(f"{pad}{note}")
    for upstream in step.upstream:
        _render_run(upstream, lines, depth + 1)
