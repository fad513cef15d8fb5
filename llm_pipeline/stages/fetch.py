"""fetch: refresh the upstream sources and write the content-addressed snapshot ingest reads.

A DVC stage that always runs (`always_changed`): it asks the Debian archive for the current
index files and packages the sources and tasks of params/ingest.yaml need (into the private
apt cache, system untouched), copies them to `files/<sha256>/<name>` and hashes every local
source and task file the params declare. `manifest.json` lists them all and nothing that
changes from run to run (no dates), so the snapshot is byte-identical when the content is:
DVC then skips ingest and everything after it. A nightly run on unchanged data trains nothing.

Outputs (under output_dir):
  files/<sha256>/<name>     the Debian archive files (apt index files, .debs)
  manifest.json             snapshot_id + [{kind, name, path | source, sha256, bytes}]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from llm_pipeline.config import StageConfig, load_config
from llm_pipeline.data.ingest_config import IngestConfig
from llm_pipeline.data.sources import kinds
from llm_pipeline.data.sources.snapshot import APT_INDEX, DEB, SNAPSHOT_MANIFEST, AptCache, write_snapshot
from llm_pipeline.data.tasks import build as tasks_build
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import atomic_path, write_json
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.runs import NULL_TRACKER, Tracker

log = logging.getLogger(__name__)


class FetchConfig(StageConfig):
    ingest_params: str = "params/ingest.yaml"  # which sources and tasks to fetch for
    output_dir: str = "data/snapshot"
    cache_dir: str = ".cache/sources"  # apt's private lists + .debs (working state, not an output)
    refresh: bool = True  # ask the archive for new files; false: use the cache when it has them
    # The archive unreachable while refreshing: use_cache keeps the nightly going on the last
    # files fetched (a warning, and `stale` in reports/fetch.json); fail stops the run.
    on_fetch_error: Literal["use_cache", "fail"] = "use_cache"


def upstream_needs(ingest: IngestConfig) -> tuple[tuple[str, ...], list[str]]:
    """(apt index languages, .deb packages) that ingest's sources and tasks read."""
    languages: list[str] = []
    packages: list[str] = []
    for src in ingest.sources:
        index, debs = kinds.upstream_needs(src)
        languages += ["en"] if index else []
        packages += debs
    task_languages, task_debs = tasks_build.upstream_needs(ingest.tasks, has_debian_source=bool(languages))
    return tuple(dict.fromkeys([*languages, *task_languages])), list(dict.fromkeys(packages + task_debs))


def fetch_upstream(cfg: FetchConfig, languages: tuple[str, ...], packages: list[str]) -> list[tuple[str, Path]]:
    """The files, refreshed from the archive when cfg.refresh. Index files first, for every
    language at once: one `apt-get update` asking for fewer would delete the others."""
    fresh = AptCache(cfg.cache_dir, refresh=cfg.refresh)
    cached = AptCache(cfg.cache_dir, refresh=False)
    files: list[tuple[str, Path]] = []
    if languages:
        index = fresh.index_files(languages)
        files += [(APT_INDEX, p) for p in [*index.packages, *index.translations]]
    files += [(DEB, fresh.deb(package) if cfg.refresh else cached.deb(package)) for package in packages]
    return files


def run(cfg: FetchConfig, tracker: Tracker = NULL_TRACKER) -> StageResult:
    ingest = load_config(IngestConfig, cfg.ingest_params, [])
    languages, packages = upstream_needs(ingest)
    stale_reason = None
    try:
        upstream = fetch_upstream(cfg, languages, packages)
    except PipelineError as exc:
        if cfg.on_fetch_error == "fail" or not cfg.refresh:
            raise
        stale_reason = str(exc)
        log.warning("fetch: refreshing failed (%s); using the cached files in %s", exc, cfg.cache_dir)
        upstream = fetch_upstream(cfg.model_copy(update={"refresh": False}), languages, packages)
    local = [p for src in ingest.sources for p in kinds.local_files(src)] + tasks_build.local_files(ingest.tasks)

    out = Path(cfg.output_dir)
    with atomic_path(out) as tmp:
        snapshot = write_snapshot(tmp, upstream, local)
        write_json(tmp / SNAPSHOT_MANIFEST, snapshot)  # no dates: equal content, equal bytes
    files = snapshot["files"]
    log.info("snapshot %s: %d upstream files, %d local files", snapshot["snapshot_id"][:12], len(upstream), len(local))
    tracker.set_tags({"snapshot_id": snapshot["snapshot_id"]})
    return StageResult(
        metrics={
            "fetch/upstream_files": len(upstream),
            "fetch/local_files": len(local),
            "fetch/bytes": sum(f["bytes"] for f in files),
            "fetch/stale": float(stale_reason is not None),
        },
        report={
            "snapshot_id": snapshot["snapshot_id"],
            "output_dir": str(out),
            "stale": stale_reason,
            "files": files,
        },
        artifacts=[out / SNAPSHOT_MANIFEST],
    )
