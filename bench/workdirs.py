"""Workdirs for the benches that train beside a project: its data linked in, stages run by the CLI.

A bench (bench/quality_curve.py, bench/profile_run.py) trains and scores in a folder of its own
that reads the project's data/ingest and data/tokenize through links, so nothing in the project
changes and one ingest serves every variant. Stages run through the public CLI with tracking off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CLI = Path(sys.executable).with_name("llm-pipeline")
# what a workdir reads from its project: ingest's tables and the tokenizers with their shards
SHARED_DATA = ("data/ingest", "data/tokenize")


def missing_data(project: Path) -> list[str]:
    """The project's folders a workdir needs that are not there yet (ingest and tokenize not run)."""
    return [d for d in ("data/ingest/tasks", "data/tokenize") if not (project / d).is_dir()]


def link(workdir: Path, project: Path, paths: tuple[str, ...] = SHARED_DATA) -> None:
    """Link each of `paths` in `workdir` to the project's (kept when a rerun finds it linked)."""
    for relative in paths:
        path = workdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to((project / relative).resolve())


def run_stage(workdir: Path, name: str, *overrides: str) -> float:
    """`llm-pipeline <name> --set <override> ...` in `workdir`, tracking off; returns its seconds."""
    command = [str(CLI), name, *(arg for o in overrides for arg in ("--set", o))]
    started = time.perf_counter()
    print(f"  {name} {' '.join(o for o in overrides if '=' in o and 'progress' not in o)}", flush=True)
    subprocess.run(command, cwd=workdir, check=True, env=os.environ | {"LLM_PIPELINE_TRACKING": "off"})
    seconds = time.perf_counter() - started
    print(f"    {seconds:.0f} s", flush=True)
    return seconds
