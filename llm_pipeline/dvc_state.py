"""DVC's own bookkeeping files survive a kill: keep the last good `dvc.lock`, restore it when torn.

DVC rewrites two files in place (open with "w", then write), so a SIGKILL in the middle leaves
them cut short, and from then on every `dvc` command in the project fails:

- `dvc.lock` (dvc/utils/serialize/_common.py `_dump_data`, called by `Lockfile.dump_stages`):
  a prefix of the new file. Cut inside a value it fails DVC's schema ("expected int ... size");
  cut inside an md5 or between lines it still parses but lies (a short hash, a missing stage).
- `.dvc/tmp/rwlock` (dvc/rwlock.py `_edit_rwlock`): JSON cut short, "JSON structure is corrupted".

Everything else DVC writes is either atomic (the run cache: a temporary then a move), a
transactional sqlite store, or unused by this project. Our own outputs go through
`io.atomic_path`.

The recovery: before a stage, keep a copy of `dvc.lock` when it is whole (DVC's schema plus the
checks below); when a run starts or a stage failed and the file is torn, put the last whole copy
back. DVC's hashes then decide what is stale: a stage that ran after the copy was kept is either
restored from DVC's run cache (same deps and params: its outputs are checked out, nothing is
recomputed) or rerun, and the stages are deterministic, so the outputs come out byte-identical.
A torn `rwlock` is removed: it only records which live `dvc` processes hold which paths, and no
`dvc` process can read it any more.

`python -m llm_pipeline.dvc_state repro [dvc repro args]` (what `make repro` runs) recovers and then
runs `dvc repro`; `... check` says whether the files are whole; `... recover` only recovers.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import remove_stale_temporaries

logger = logging.getLogger(__name__)

LOCK_FILE = "dvc.lock"
RWLOCK_FILE = Path(".dvc") / "tmp" / "rwlock"
# inside DVC's tmp folder: ignored by git and by DVC, kept across runs, gone with `dvc gc`-free cleans
GOOD_COPY_DIR = Path(".dvc") / "tmp" / "llm-pipeline"
GOOD_COPY = GOOD_COPY_DIR / "dvc.lock.good"
GOOD_COPY_INFO = GOOD_COPY_DIR / "dvc.lock.good.json"
# what DVC writes for a file or folder hash (md5, a folder's with ".dir")
HASH = re.compile(r"[0-9a-f]{32}(\.dir)?")


def lock_problem(project_dir: str | Path, good: dict[str, Any] | None = None) -> str | None:
    """Why `dvc.lock` is torn, or None when it is whole (or absent: a project DVC never ran).

    Whole means: DVC's own schema accepts it, it ends with the newline DVC's dump ends with,
    every dep/out entry has a full hash and size (a cut between lines can drop them and still
    parse), and it names every stage `good` (the last whole copy) names: DVC only adds stages
    during `repro`, so a missing one is a file cut short.
    """
    path = Path(project_dir) / LOCK_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    data, problem = _parse(text)
    if problem:
        return problem
    if not text.endswith("\n"):
        return f"ends mid-line at line {text.count(chr(10)) + 1} (byte {len(text.encode())})"
    stages = data.get("stages") or {}
    for stage, entry in stages.items():
        for kind in ("deps", "outs"):
            for i, item in enumerate(entry.get(kind) or []):
                digest = item.get("md5")
                if digest is None or not HASH.fullmatch(str(digest)) or "size" not in item:
                    return f"stage {stage}: {kind} entry {i} ({item.get('path')}) has no full hash and size"
                if str(digest).endswith(".dir") and "nfiles" not in item:
                    return f"stage {stage}: {kind} entry {i} ({item.get('path')}) has no file count"
    if good:
        missing = sorted(set(good.get("stages") or {}) - set(stages))
        if missing:
            return f"lacks stage(s) {', '.join(missing)} that the last whole copy has (cut short)"
    return None


@functools.lru_cache(maxsize=4)
def _parse(text: str) -> tuple[dict[str, Any], str | None]:
    """Parse and validate with DVC's own lock-file schema; (data, None) or ({}, what is wrong).

    Cached by content (callers only read the result): the guard before a stage reads the same lock
    and the same kept copy several times, ~0.17 s a parse for the default run's 62 KB lock."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.serialize import parse_yaml
    from voluptuous import MultipleInvalid

    try:
        data = parse_yaml(text, LOCK_FILE)
    except Exception as exc:  # DVC's YAMLFileCorruptedError (ruamel's error as its cause)
        cause = exc.__cause__ or exc
        return {}, f"does not parse as YAML ({' '.join(str(cause).split())[:160]})"
    try:
        COMPILED_LOCKFILE_SCHEMA(data)
    except MultipleInvalid as exc:
        return {}, f"fails DVC's schema ({' '.join(str(exc).split())[:160]})"
    return data, None


def rwlock_problem(project_dir: str | Path) -> str | None:
    """Why `.dvc/tmp/rwlock` is unreadable to DVC, or None (absent or whole JSON)."""
    path = Path(project_dir) / RWLOCK_FILE
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        return f"is not whole JSON ({exc})"
    return None


def load_good_copy(project_dir: str | Path) -> dict[str, Any] | None:
    path = Path(project_dir) / GOOD_COPY
    if not path.exists():
        return None
    data, problem = _parse(path.read_text(encoding="utf-8"))
    return None if problem else data


def keep_good_copy(project_dir: str | Path, before: str, dvc_succeeded: bool = False) -> bool:
    """Copy `dvc.lock` aside if it is whole (`before`: what runs next, for the recovery's log line).
    Written through a temporary and a rename, so the copy itself is never torn. False if not kept.

    dvc_succeeded: a `dvc` command just exited 0, so DVC wrote the file to its end; it is not
    compared with the previous copy (a stage dropped from dvc.yaml may legitimately leave it).
    """
    project = Path(project_dir)
    lock = project / LOCK_FILE
    if not lock.exists() or lock_problem(project, None if dvc_succeeded else load_good_copy(project)) is not None:
        return False
    (project / GOOD_COPY_DIR).mkdir(parents=True, exist_ok=True)
    info = json.dumps({"saved_unix": time.time(), "before": before})
    for target, write in (
        (project / GOOD_COPY, lambda tmp: shutil.copyfile(lock, tmp)),
        (project / GOOD_COPY_INFO, lambda tmp: tmp.write_text(info)),
    ):
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        write(tmp)
        os.replace(tmp, target)
    return True


def recover(project_dir: str | Path) -> list[str]:
    """Repair what a kill tore: restore `dvc.lock` from the last whole copy, remove a torn rwlock.
    Returns one line per repair (also logged). Raises PipelineError when `dvc.lock` is torn and
    no whole copy was ever kept, naming what to do."""
    project = Path(project_dir)
    repairs = []
    problem = rwlock_problem(project)
    if problem:
        (project / RWLOCK_FILE).unlink(missing_ok=True)
        repairs.append(f"{RWLOCK_FILE} {problem}: removed it (it only lists locks of dvc processes, none can read it)")
    good = load_good_copy(project)
    problem = lock_problem(project, good)
    if problem:
        if good is None:
            raise PipelineError(
                f"{project / LOCK_FILE} is torn ({problem}) and no whole copy was kept "
                f"({project / GOOD_COPY} is missing): restore it from git (`git checkout dvc.lock`), or "
                "remove it and `dvc repro` (every stage is checked against DVC's run cache or rerun)"
            )
        info = _good_copy_info(project)
        shutil.copyfile(project / GOOD_COPY, project / f".{LOCK_FILE}.tmp-{os.getpid()}")
        os.replace(project / f".{LOCK_FILE}.tmp-{os.getpid()}", project / LOCK_FILE)
        repairs.append(
            f"{LOCK_FILE} {problem}: restored the whole copy kept {info}; "
            "DVC's hashes decide what reruns (unchanged stages come from its run cache)"
        )
    for line in repairs:
        logger.warning("recovered: %s", line)
    return repairs


def _good_copy_info(project: Path) -> str:
    try:
        info = json.loads((project / GOOD_COPY_INFO).read_text())
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["saved_unix"]))
        return f"at {when} before {info['before']}"
    except (OSError, ValueError, KeyError):
        return "earlier (time unknown)"


def guard(project_dir: str | Path, before: str) -> list[str]:
    """What a caller runs before each `dvc` command: recover, clear dead writers' temporaries beside
    the stage outputs, then keep the (now whole) lock."""
    repairs = recover(project_dir)
    removed = remove_dead_temporaries_beside_outputs(project_dir)
    if removed:
        repairs.append(f"removed {len(removed)} temporaries of killed writers: {', '.join(map(str, removed[:5]))}")
        logger.warning("recovered: %s", repairs[-1])
    keep_good_copy(project_dir, before)
    return repairs


def remove_dead_temporaries_beside_outputs(project_dir: str | Path) -> list[Path]:
    """`.<out>.tmp-<pid>` of dead writers beside each output dvc.lock names (io.atomic_path's
    temporaries). A killed stage that DVC later restores from its run cache never runs again to
    clear them; .dvcignore keeps them out of every hash, but they hold disk and look like half an
    output."""
    project = Path(project_dir)
    data, problem = _parse((project / LOCK_FILE).read_text()) if (project / LOCK_FILE).exists() else ({}, None)
    if problem:
        return []
    stages = (data.get("stages") or {}).values()
    outputs = {project / out["path"] for entry in stages for out in entry.get("outs") or []}
    return [path for output in sorted(outputs) if output.parent.is_dir() for path in remove_stale_temporaries(output)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llm_pipeline.dvc_state",
        description="Check or repair DVC's dvc.lock and rwlock after a kill, and run `dvc repro` safely.",
        epilog="`make repro` runs `repro`. A torn dvc.lock is restored from the last whole copy the flow "
        "or this command kept (.dvc/tmp/llm-pipeline/); DVC's hashes then decide what reruns.",
    )
    parser.add_argument("--project-dir", default=".", help="the project (default: the current directory)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="exit 1 and say why if dvc.lock or rwlock is torn")
    sub.add_parser("recover", help="restore a torn dvc.lock from the last whole copy, remove a torn rwlock")
    repro = sub.add_parser("repro", help="recover, keep a whole copy, then `dvc repro ARGS...`")
    repro.add_argument("dvc_args", nargs="*", metavar="ARGS", help="everything after `repro` goes to `dvc repro`")
    argv = list(sys.argv[1:] if argv is None else argv)
    dvc_args = argv[argv.index("repro") + 1 :] if "repro" in argv else []  # options included, as they are
    args = parser.parse_args(argv[: len(argv) - len(dvc_args)])
    args.dvc_args = dvc_args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    project = Path(args.project_dir)
    try:
        if args.command == "check":
            problems = [
                f"{name} {problem}"
                for name, problem in (
                    (LOCK_FILE, lock_problem(project, load_good_copy(project))),
                    (str(RWLOCK_FILE), rwlock_problem(project)),
                )
                if problem
            ]
            for line in problems:
                print(f"torn: {line}")
            return 1 if problems else 0
        if args.command == "recover":
            recover(project)
            return 0
        guard(project, before="dvc repro " + " ".join(args.dvc_args))
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"llm-pipeline: error: {exc}", file=sys.stderr)
        return 2
    dvc = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}") or "dvc"
    code = subprocess.call([dvc, "repro", *args.dvc_args], cwd=project)
    if code == 0:
        keep_good_copy(project, before="the next dvc command", dvc_succeeded=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
