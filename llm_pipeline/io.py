"""File helpers every stage shares: hashing, JSON, atomic outputs, manifests.

Outputs are written to a temporary sibling and renamed when complete, so a crashed stage
never leaves a half-written file where the next stage would read it.
"""

from __future__ import annotations

import contextlib
import errno
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
RUN_RECORD = ".llm-pipeline-run.json"  # listed in .dvcignore


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
        with disk_faults(final, note=f"the previous {final.name} is intact"):
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


# --- A full disk (or quota) is one line naming the path: libraries often drop the filename

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_NO_SPACE_TEXTS = ("[Errno 28]", "[errno 28]", "(os error 28)", "[Errno 122]", "(os error 122)")


def is_no_space(exc: BaseException) -> bool:
    """Whether `exc` is a full disk or an exceeded quota: an OSError with that errno, a
    shutil.Error (copytree) listing one, or a library's error that only says so in its text
    (the Rust `tokenizers` raise a plain Exception "... (os error 28)")."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return True
    return isinstance(exc, Exception) and any(text in str(exc) for text in _NO_SPACE_TEXTS)


def no_space_path(exc: BaseException) -> str | None:
    """The file the failed write was for, when the exception still names it."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        return str(exc.args[0][0][1])  # [(src, dst, why), ...]
    if isinstance(exc, OSError):
        named = exc.filename2 or exc.filename
        return None if named is None else str(named)
    return None


def no_space_error(path: str | Path, exc: BaseException, note: str = "") -> PipelineError:
    """The one line for a full disk at `path`: what is left on its filesystem and what to do."""
    path = Path(path)
    quota = getattr(exc, "errno", None) == errno.EDQUOT or "os error 122" in str(exc) or "Errno 122" in str(exc)
    reason = "disk quota exceeded" if quota else "no space left on device"
    where = next((p for p in (path, *path.parents) if p.exists()), None)
    usage = shutil.disk_usage(where) if where is not None else None
    free = f"{usage.free / 1e6:.2f} MB free of {usage.total / 1e6:.1f} MB there" if usage else "free space unknown"
    tail = f"; {note}" if note else ""
    return PipelineError(f"{path}: {reason} ({free}){tail}; free some space and rerun")


@contextlib.contextmanager
def disk_faults(path: str | Path, note: str = "", *, named_first: bool = False) -> Iterator[None]:
    """Turn a full disk inside the block into one PipelineError naming `path` (what the block
    writes), or with `named_first` the file the error names, when it names one."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as exc:
        if not is_no_space(exc):
            raise
        raise no_space_error((named_first and no_space_path(exc)) or path, exc, note) from None


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
    """The record each stage writes next to its outputs: what went in, what came out.

    Only what the outputs are made of: no dates, durations or run ids (those go to the run
    record below and reports/), so a stage rerun on the same inputs writes the same bytes and
    DVC sees nothing new downstream (a killed and rerun stage, a forced rerun)."""
    return {
        "stage": stage,
        "command": " ".join(sys.argv),
        "inputs": inputs,
        "outputs": outputs,
        "counts": counts,
        "versions": versions(),
        **(extra or {}),
    }


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return read_json(Path(directory) / MANIFEST_NAME)


def run_record_path(output: str | Path) -> Path:
    """Which run made a stage output (MLflow run ids, time, the checkpoint it resumed from): a file
    inside the output folder that .dvcignore lists, so it never changes the output's DVC hash."""
    return Path(output) / RUN_RECORD


def write_run_record(output: str | Path, **record: Any) -> None:
    write_json(run_record_path(output), {"created_unix": int(time.time()), **record})


def read_run_record(output: str | Path) -> dict[str, Any]:
    """The run record of an output; {} if none (tracking off, or an output pulled from a remote)."""
    path = run_record_path(output)
    return read_json(path) if path.is_file() else {}
