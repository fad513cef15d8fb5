"""Where ingest finds the upstream (Debian archive) files: a fetched snapshot, or the apt cache.

The fetch stage (stages/fetch.py) refreshes the private apt cache and copies the files the
configured sources need into a content-addressed snapshot, `files/<sha256>/<name>` plus
`manifest.json`, a DVC output. Ingest reads upstream files from that snapshot only and never
touches the network, so `dvc repro` reruns ingest (and what follows) exactly when the fetched
content changed, and reproduces from the snapshot it was given. The snapshot also records the
sha256 of every local source and task file the params declare (hashed, not copied), so a
changed local file changes the snapshot too.

`AptCache` is the direct path (no fetch stage; `snapshot_dir: null`): fetch into the cache on
first use, as `llm-pipeline ingest` alone always did.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llm_pipeline.data.sources import apt_sources
from llm_pipeline.data.sources.apt_sources import IndexFiles
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import read_json, sha256_file, sha256_text
from llm_pipeline.locking import cache_lock

SNAPSHOT_MANIFEST = "manifest.json"
APT_INDEX, DEB, LOCAL = "apt_index", "deb", "local"  # the kinds of file a snapshot records


class SourceFiles(Protocol):
    """The upstream files a source or task builder reads."""

    def index_files(self, languages: tuple[str, ...] = ("en",)) -> IndexFiles: ...

    def deb(self, package: str) -> Path: ...


@dataclass(frozen=True)
class AptCache:
    """Fetch into `cache_dir` when missing (or always, with refresh)."""

    cache_dir: str
    refresh: bool = False

    def index_files(self, languages: tuple[str, ...] = ("en",)) -> IndexFiles:
        with cache_lock(self.cache_dir):
            return apt_sources.fetch_index_files(self.cache_dir, languages=languages, refresh=self.refresh)

    def deb(self, package: str) -> Path:
        with cache_lock(self.cache_dir):
            return apt_sources.fetch_deb(package, self.cache_dir, refresh=self.refresh)


@dataclass(frozen=True)
class Snapshot:
    """A fetched snapshot directory: read-only, never fetches."""

    root: Path

    def entries(self) -> list[dict[str, Any]]:
        path = self.root / SNAPSHOT_MANIFEST
        if not path.is_file():
            raise PipelineError(f"{path}: no snapshot here; run the fetch stage first (`dvc repro fetch`)")
        return list(read_json(path)["files"])

    def _paths(self, kind: str) -> list[Path]:
        return [self.root / e["path"] for e in self.entries() if e["kind"] == kind]

    def index_files(self, languages: tuple[str, ...] = ("en",)) -> IndexFiles:
        found = apt_sources.select_index_files(self._paths(APT_INDEX), languages)
        if not found.packages or len(found.translations) < len(languages):
            raise PipelineError(
                f"{self.root / SNAPSHOT_MANIFEST}: no Packages/Translation-{'/'.join(languages)} files in the "
                "snapshot; the fetch stage fetches what params/ingest.yaml needs: rerun it (`dvc repro fetch`)"
            )
        return found

    def deb(self, package: str) -> Path:
        debs = [p for p in self._paths(DEB) if p.name.startswith(f"{package}_")]
        if not debs:
            raise PipelineError(
                f"{self.root / SNAPSHOT_MANIFEST}: no {package} .deb in the snapshot; rerun the fetch stage"
            )
        return debs[-1]

    def check_local(self, inputs: list[dict[str, Any]]) -> None:
        """Raise unless every local file ingest read is in the snapshot with the same sha256:
        a file edited between fetch and ingest, or a source the fetch stage never saw."""
        recorded = {os.path.abspath(e["source"]): e["sha256"] for e in self.entries() if e["kind"] == LOCAL}
        for item in inputs:
            path = os.path.abspath(item["path"])
            if path.startswith(os.path.abspath(self.root) + os.sep):
                continue  # an upstream file of the snapshot itself
            if path not in recorded:
                raise PipelineError(
                    f"{item['path']}: read by ingest but not in {self.root / SNAPSHOT_MANIFEST}; "
                    "rerun the fetch stage after changing sources (`dvc repro`)"
                )
            if recorded[path] != item["sha256"]:
                raise PipelineError(
                    f"{item['path']}: changed after the fetch stage hashed it (sha256 {recorded[path][:12]}…, "
                    f"now {item['sha256'][:12]}…); rerun `dvc repro`"
                )


def write_snapshot(root: Path, upstream: list[tuple[str, Path]], local: list[Path]) -> dict[str, Any]:
    """Copy `upstream` ((kind, path) pairs) into `root/files/<sha256>/<name>` and hash `local`
    files in place; return {snapshot_id, files} for the caller's manifest. The id hashes the
    (kind, name or source path, sha256) list: equal ids, equal content."""
    entries: list[dict[str, Any]] = []
    for kind, path in upstream:
        digest = sha256_file(path)
        rel = Path("files") / digest / path.name
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)
        entries.append(
            {"kind": kind, "name": path.name, "path": str(rel), "sha256": digest, "bytes": path.stat().st_size}
        )
    for path in local:
        entries.append(
            {
                "kind": LOCAL,
                "name": path.name,
                "source": str(path),
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        )
    entries.sort(key=lambda e: (e["kind"], e.get("source") or e["name"]))
    snapshot_id = sha256_text("\n".join(f"{e['kind']} {e.get('source') or e['name']} {e['sha256']}" for e in entries))
    return {"snapshot_id": snapshot_id, "files": entries}
