"""File helpers every stage shares: hashing, JSON, atomic outputs, manifests.

Outputs are written to a temporary sibling and renamed when complete, so a crashed stage
never leaves a half-written file where the next stage would read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError

MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it onto `final` only on success.

    Works for a file or a directory: whatever the caller creates at the yielded path.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    remove_stale_temporaries(final)
    _remove(tmp)
    try:
        yield tmp
        _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove the temporaries of `final` left by writers that died (SIGKILL, OOM: no `finally`
    ran): `.<name>.tmp-<pid>` whose pid is no longer a process. A live writer's is left alone."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            _remove(tmp)
            removed.append(tmp)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not found (has the stage that writes it run?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PipelineError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}") from None


def describe_inputs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """[{path, sha256, bytes}] for files (directories are expanded, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    return [{"path": str(f), "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("llm-pipeline", "torch", "lightning", "tokenizers", "pandas", "pyarrow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def build_manifest(
    stage: str,
    *,
    inputs: list[dict[str, Any]],
    outputs: dict[str, Any],
    counts: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record each stage writes next to its outputs: what went in, what came out."""
    return {
        "stage": stage,
        "created_unix": int(time.time()),
        "command": " ".join(sys.argv),
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        "versions": versions(),
        **(extra or {}),
    }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return read_json(Path(directory) / MANIFEST_NAME)
