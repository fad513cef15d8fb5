"""The integration tests' project: a copy of this repository's code, params and dvc.yaml, made
tiny (a slice of the real corpus, 2-layer models, tens of steps), and the helpers the tests use
on it (dvc, the flow, params edits, digests of every output, the kill hook's settings)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_pipeline.io import RUN_RECORD, sha256_file

REPO = Path(__file__).resolve().parents[2]


# Runs of params/finetune.yaml the test world leaves out, each with the runs that cover its code
# path here (every stage costs a process start, ~10 s, in each flow that runs it).
SKIPPED_RUNS = {
    "translation-gpt": "prompted seq2seq as summarization-gpt, a {lang} template column as translation-t5",
}
# Runs the test world adds to the default matrix: the GPT classifier, which the tests hold to a
# bar, kill and resume (the default run leaves it out for time)
ADDED_RUNS = {"classification-gpt": {"task": "classification", "family": "gpt"}}
# the default matrix as the test world runs it
DEFAULT_RUNS: dict[str, dict] = {
    name: spec
    for name, spec in yaml.safe_load((REPO / "params" / "finetune.yaml").read_text())["runs"].items()
    if name not in SKIPPED_RUNS
} | ADDED_RUNS


STAGE_RUNS = {
    "fetch",
    "ingest",
    "tokenize-bpe",
    "tokenize-wordpiece",
    "tokenize-unigram",
    "pretrain-gpt",
    "pretrain-bert",
    "pretrain-t5",
    *(f"finetune-{name}" for name in DEFAULT_RUNS),
    "evaluate",
    "report",
}


QUICK_TRAINER = {"val_check_interval": 10, "limit_val_batches": 3, "enable_progress_bar": False}


# tiny-but-real: a slice of the real corpus, a 2-layer model, tens of steps
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    # the shared download cache, no refresh: tests do not hit the archive once it is cached
    "fetch": {"cache_dir": str(REPO / ".cache" / "sources"), "refresh": False},
    "ingest": {
        "cache_dir": str(REPO / ".cache" / "sources"),
        "progress": False,
        "sources": [{"kind": "debian_descriptions", "max_records": 1500}, {"kind": "bible_web", "max_records": 120}],
        "split": {"val_fraction": 0.1, "test_fraction": 0.1},
        "tasks": {
            "classification": {"top_n_sections": 4},
            # a local task file (written by the `project` fixture): a DVC dep through the snapshot
            "local": [{"name": "notes", "kind": "seq2seq", "path": "local/notes.jsonl", "format": "jsonl"}],
        },
    },
    "tokenize": {
        "tokenizers": {name: {"vocab_size": 1024} for name in ("bpe", "wordpiece", "unigram")},
        "progress": False,
    },
    "pretrain": {
        "families": {
            "gpt": {
                "model": {"preset": "tiny", "overrides": {"n_embd": 64, "block_size": 64}},
                # enough steps that beating the unigram baseline is not a coin flip (80 steps
                # at lr 3e-3 once landed at 411 vs 405)
                "optim": {"lr": 0.01, "warmup_steps": 20},
                "trainer": QUICK_TRAINER | {"max_steps": 200, "val_check_interval": 100, "limit_val_batches": 5},
            },
            "bert": {
                "model": {"preset": "tiny"},
                "data": {"seq_len": 64},
                "trainer": QUICK_TRAINER | {"max_steps": 20},
            },
            "t5": {
                "model": {"preset": "tiny"},
                "data": {"seq_len": 64, "batch_size": 8},
                "trainer": QUICK_TRAINER | {"max_steps": 20},
            },
        }
    },
    # every run of the default matrix, a few steps each; the GPT classifier trains long enough
    # to be held to a bar below
    "finetune": {
        "runs": {
            name: {"batch_size": 16, "trainer": QUICK_TRAINER | {"max_steps": 10}}
            | ({"format": {"max_source_len": 32, "max_target_len": 16}} if "format" in spec else {})
            for name, spec in DEFAULT_RUNS.items()
            if spec.get("method") != "none"
        }
        | dict.fromkeys(SKIPPED_RUNS)  # None: removed from the project's params (deep_update)
        | {
            # 40 steps at lr 1e-3 left the tiny classifier answering the majority label for every
            # test text (macro-F1 equal to the baseline's); 200 at 3e-3 reached about twice it
            "classification-gpt": ADDED_RUNS["classification-gpt"]
            | {
                "max_len": 64,
                "batch_size": 16,
                "optim": {"lr": 0.003, "warmup_steps": 20},
                "trainer": {"max_steps": 200, "val_check_interval": 100, "enable_progress_bar": False},
            }
        }
    },
    "evaluate": {
        "max_test_tokens": 4000,
        "max_test_batches": 3,
        "max_examples": 12,
        "decoding": {"num_beams": 2, "max_new_tokens": 8},
        "generation": {"max_new_tokens": 8, "max_samples": 4},
        "samples": {"max_new_tokens": 8},
    },
}


def deep_update(base: dict, update: dict) -> dict:
    """A merged copy; a None value removes its key. Never in place: the params' YAML anchors load
    as one dict shared by every block that uses them, so updating one run's `trainer` in place
    set every run's (the GPT classifier meant to train 200 steps trained the 10 the last run was given)."""
    merged = dict(base)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = deep_update(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def set_params(project: Path, stage: str, update: dict) -> None:
    path = project / "params" / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(deep_update(yaml.safe_load(path.read_text()), update)))


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["dvc", *args], cwd=project, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def stages_run(output: str) -> set[str]:
    """Stages `dvc repro` ran, less fetch: it always runs (dvc.yaml: always_changed)."""
    ran = set(re.findall(r"Running stage '([^']+)'", output))
    assert "fetch" in ran, output
    return ran - {"fetch"}


def repro_recovering(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """What `make repro` runs: restore a dvc.lock a kill tore, then `dvc repro ARGS`."""
    env = env or {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "llm_pipeline.dvc_state", "--project-dir", str(project), "repro", *args]
    return subprocess.run(cmd, cwd=project, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


# tests/helpers/kill_in_lock_write/sitecustomize.py: a SIGKILL inside DVC's in-place write of dvc.lock
KILL_HOOK = REPO / "tests" / "helpers" / "kill_in_lock_write"


def kill_in_lock_write(fraction: float, marker: Path, stage: str, tree_of: str | None = None) -> dict[str, str]:
    """Env vars that make the first `dvc` process with `stage` in its arguments die after writing
    `fraction` of the new dvc.lock (the marker records the cut), as a SIGKILL landing there does."""
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(KILL_HOOK), os.environ.get("PYTHONPATH", "")) if p),
        "LLM_PIPELINE_TEST_KILL_LOCK_WRITE": str(fraction),
        "LLM_PIPELINE_TEST_KILL_MARKER": str(marker),
        "LLM_PIPELINE_TEST_KILL_ARGV": stage,
    }
    return env | ({"LLM_PIPELINE_TEST_KILL_TREE_OF": tree_of} if tree_of else {})


def assert_up_to_date(project: Path) -> None:
    """`dvc status`: nothing changed but fetch, which DVC always lists (always_changed)."""
    assert json.loads(dvc(project, "status", "--json")) == {"fetch": ["always changed"]}


def write_notes(path: Path, rows: int) -> None:
    lines = [{"input": f"What is note {i} about?", "target": f"Note {i} is about topic {i % 7}."} for i in range(rows)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def copy_project(dst: Path, files: tuple[str, ...] = ()) -> Path:
    """The project's code, params and dvc.yaml (and `files`) copied into `dst`, a DVC repo
    without git, with SMALL_PARAMS merged into its params."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("llm_pipeline", "flows", "params"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    for name in ("dvc.yaml", "docs/quality_curve.json", *files):  # the curve: a dep of the report stage
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, dst / name)
    dvc(dst, "init", "--no-scm", "-q")
    shutil.copy(REPO / ".dvcignore", dst / ".dvcignore")  # run records are not output content
    shutil.copy(REPO / ".dvc" / "config", dst / ".dvc" / "config")  # the repo's default remote
    dvc(dst, "config", "core.no_scm", "true")  # which the copy replaced
    (dst / "local").mkdir()
    write_notes(dst / "local" / "notes.jsonl", 80)  # SMALL_PARAMS' local task
    for stage, update in SMALL_PARAMS.items():
        set_params(dst, stage, update)
    return dst


def run_flow(project: Path, monkeypatch: pytest.MonkeyPatch | None = None, **options: Any) -> dict:
    """The pipeline flow in `project`, tracking into the project's own mlflow.db whatever the
    environment says. With monkeypatch: the real stage task (its one retry) without the 10 s
    pause between attempts, for the tests that kill a stage."""
    import flows.pipeline

    if monkeypatch is not None:
        monkeypatch.setattr(flows.pipeline, "run_stage", flows.pipeline.run_stage.with_options(retry_delay_seconds=0))
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_URI", "LLM_PIPELINE_TRACKING")}
    try:
        return flows.pipeline.pipeline(project_dir=str(project), **options)
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def mlflow_client_of(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def data_digests(project: Path) -> dict[str, str]:
    """sha256 of every stage output file under data/ (not the checkpoints, not the run records)."""
    digests = {}
    for path in sorted((project / "data").rglob("*")):
        rel = path.relative_to(project / "data")
        if path.is_file() and rel.parts[0] != "checkpoints" and path.name != RUN_RECORD:
            digests[str(rel)] = sha256_file(path)
    return digests


def leftovers(project: Path) -> list[str]:
    """Temporaries a killed writer could leave: atomic_path's `.<name>.tmp-<pid>` (and the `.partial` of old)."""
    return [str(p) for p in project.rglob(".*") if ".tmp-" in p.name or p.name.endswith(".partial")]


def evaluate_metrics(project: Path) -> dict:
    return json.loads((project / "reports" / "evaluate.json").read_text())["metrics"]


def stage_process(stage: str, process: Any, project: Path) -> bool:
    """Is this psutil process the stage's CLI (dvc.yaml's cmd: `llm-pipeline <stage> --params
    params/<stage>.yaml` after the item of a per-item stage) running in `project`? Not the `dvc
    repro` that runs it, and not the same stage of another project on this machine."""
    import psutil

    name, _, item = stage.partition("@")
    cmdline = process.info["cmdline"] or []
    if f"params/{name}.yaml" not in cmdline or (item and item not in cmdline):
        return False
    try:
        return Path(process.cwd()) == project
    except psutil.Error:  # ended meanwhile, or not ours to inspect
        return False


# the GPT classifier, retrained under a kill: fewer steps than the fixture's 200, a checkpoint every 20
KILLED_STEPS = 80


KILLED_TRAINER = {"max_steps": KILLED_STEPS, "val_check_interval": 40, "checkpoint_every_n_steps": 20}
