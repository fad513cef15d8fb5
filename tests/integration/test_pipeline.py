"""The whole pipeline on a small slice of the default corpus, through the Prefect flow.

One flow run in a copy of the project (real Debian + WEB data, tiny model sizes), then:
reports and MLflow runs/registered models are checked, `dvc status` must be clean, a second
`dvc repro` must do nothing, an unchanged nightly trains nothing, a pretrain param change (bert
on 2 DDP processes, through the flow) reruns only what follows it, a run added to the finetune
matrix trains only itself, and every stage SIGKILLed at a random moment, under `dvc repro` and
under the flow, reruns to byte-identical outputs with no leftovers and no zombie MLflow runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_pipeline.io import RUN_RECORD, read_run_record, sha256_file

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUNS: dict[str, dict] = yaml.safe_load((REPO / "params" / "finetune.yaml").read_text())["runs"]
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
        | {
            # 40 steps at lr 1e-3 left the tiny classifier answering the majority label for every
            # test text (macro-F1 equal to the baseline's); 200 at 3e-3 reached about twice it
            "classification-gpt": {
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
    """A merged copy. Never in place: the params' YAML anchors load as one dict shared by every
    block that uses them, so updating one run's `trainer` in place set every run's (the GPT
    classifier meant to train 200 steps trained the 10 the last run was given)."""
    merged = dict(base)
    for key, value in update.items():
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
    for name in ("dvc.yaml", *files):
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


@pytest.fixture(scope="module")
def flow_project(tmp_path_factory) -> Path:
    """The project the module's one flow run (`flow_result`) fills; tests only read it."""
    return copy_project(tmp_path_factory.mktemp("project"))


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


@pytest.fixture(scope="module")
def flow_result(flow_project, prefect_harness):
    return run_flow(flow_project)


@pytest.fixture
def project(flow_result, flow_project, tmp_path) -> Path:
    """A copy of the flow's project, after its run, for a test that changes it: no test sees what
    another did, whatever their order. (The copied MLflow experiment keeps its artifact folder in
    the flow's project: new artifacts land there, under their own run ids.)"""
    return Path(shutil.copytree(flow_project, tmp_path / "project", symlinks=True))


def mlflow_client_of(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


@pytest.fixture
def mlflow_client(project):
    """MLflow of the test's own copy."""
    return mlflow_client_of(project)


@pytest.fixture
def flow_client(flow_result, flow_project):
    """MLflow of the flow's project, to read."""
    return mlflow_client_of(flow_project)


def test_flow_runs_every_stage_and_reports(flow_result, flow_project):
    assert set(flow_result) == STAGE_RUNS
    report = json.loads((flow_project / "reports" / "evaluate.json").read_text())
    m = report["metrics"]
    assert m["eval/lm/gpt/ppl"] < m["eval/lm/unigram/ppl"]
    # the fine-tuned classifier must beat always answering the most frequent training label. On
    # ~50 test texts whose label mix differs from train's, the tiny model's accuracy does not
    # reliably beat the majority's (0.33 vs 0.46 seen), so the test holds it to macro-F1, where
    # the majority rule scores 1/K of a perfect class: a classifier that collapsed to one label
    # ties it. The default run (bigger model, 9k examples) is held to accuracy too (README).
    assert m["eval/classification/gpt/macro_f1"] > 1.3 * m["eval/classification/majority/macro_f1"]
    assert m["eval/classification/gpt/test_examples"] > 0
    trained = json.loads((flow_project / "reports" / "finetune-classification-gpt.json").read_text())["metrics"]
    assert trained["steps"] == SMALL_PARAMS["finetune"]["runs"]["classification-gpt"]["trainer"]["max_steps"]
    # every run is scored with its task's metrics, beside the task's baselines
    expected = {
        "eval/classification/bert/macro_f1",
        "eval/summarization/t5/rougeL",
        "eval/summarization/gpt/rougeL",
        "eval/summarization/lead_1/rougeL",
        "eval/summarization/lead_k/rougeL",
        "eval/translation/t5/bleu_de",
        "eval/translation/t5/chrf_it",
        "eval/translation/copy_source/chrf_fr",
        "eval/qa/t5/token_f1",
        "eval/qa/gpt/exact_match",
        "eval/qa/nearest_question/token_f1",
        "eval/qa/most_frequent_answer/token_f1",
        "eval/generation/gpt/ppl",
        "eval/generation/bigram/ppl",
        "eval/generation/gpt/distinct_2",
        "eval/nsp/bert/accuracy",
        "eval/nsp/word_overlap/accuracy",
        "eval/span_corruption/t5/accuracy",
        "eval/span_corruption/sentinels_and_most_frequent/accuracy",
    }
    assert expected <= set(m), expected - set(m)
    # the T5 tokenizer learnt the translation targets: almost no <unk> in the test targets
    assert m["eval/translation/t5/target_unk_rate"] < 0.01
    assert {v["task"] for v in report["verdicts"]} >= {"classification", "summarization", "translation", "qa"}
    assert len(report["generations"]) == 4
    summary = (flow_project / "reports" / "summary.md").read_text()
    assert "summarization" in summary and "lead_k" in summary
    assert (flow_project / "reports" / "figures" / "training_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((flow_project / "data" / "ingest" / "manifest.json").read_text())
    assert all(len(entry["sha256"]) == 64 for entry in manifest["inputs"])
    assert (flow_project / "reports" / "plots" / "pretrain-gpt_loss.tsv").read_text().startswith("step\ttrain_loss")


def test_mlflow_groups_stage_runs_under_the_pipeline_run(flow_result, flow_client):
    [experiment] = [e for e in flow_client.search_experiments() if e.name == "llm-pipeline"]
    runs = flow_client.search_runs([experiment.experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert set(by_name) == STAGE_RUNS | {"pipeline"}
    parent = by_name["pipeline"].info.run_id
    for name in STAGE_RUNS:
        run = by_name[name]
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.parentRunId"] == parent, name
    # Lightning logged per-step training loss into the pretrain stage's run
    history = flow_client.get_metric_history(by_name["pretrain-gpt"].info.run_id, "train/loss")
    assert len(history) >= 5 and history[-1].value < history[0].value
    assert "val/ppl" in by_name["pretrain-gpt"].data.metrics
    assert {"val/mlm_acc", "val/nsp_acc"} <= set(by_name["pretrain-bert"].data.metrics)
    for family in ("gpt", "bert", "t5"):
        assert by_name[f"pretrain-{family}"].data.tags["model.family"] == family
    artifacts = {a.path for a in flow_client.list_artifacts(by_name["tokenize-bpe"].info.run_id)}
    assert {"tokenizer.json", "manifest.json", "tokenize-bpe.json"} <= artifacts


def test_registered_models_load_and_accept_any_length(flow_result, flow_project):
    """Every registered model is a pyfunc: a DataFrame of texts (short and long) in, one text or label each out."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{flow_project / 'mlflow.db'}")
    long_text = " ".join(["This package provides a library for parsing data files and tools to convert them"] * 2)
    rows = pd.DataFrame({"text": ["The package", long_text], "lang": ["de", "fr"]})  # 2 and 28 words: within 64 tokens
    for name in DEFAULT_RUNS:
        spec = DEFAULT_RUNS[name]
        model = mlflow.pyfunc.load_model(f"models:/llm-pipeline-{spec['task']}-{spec['family']}/1")
        out = model.predict(rows, params={"max_new_tokens": 4})
        assert len(out) == 2 and all(isinstance(text, str) for text in out), name
        if spec["task"] == "classification":
            labels = json.loads((flow_project / "data" / "finetune" / name / "manifest.json").read_text())["labels"]
            assert set(out) <= set(labels), name
    # pretrained: gpt continues, bert fills [MASK], t5 fills its sentinel (each its own placeholder)
    for family, text, placeholder in (
        ("gpt", "The package provides a", None),
        ("bert", "The [MASK] provides a library for data", "[MASK]"),
        ("t5", "The package provides a <extra_id_0> for data", "<extra_id_0>"),
    ):
        model = mlflow.pyfunc.load_model(f"models:/llm-pipeline-{family}/1")
        out = model.predict(pd.DataFrame({"text": [text]}), params={"max_new_tokens": 4})
        assert len(out) == 1 and isinstance(out[0], str) and out[0], family
        assert placeholder is None or placeholder not in out[0], family


def test_dvc_agrees_the_flow_left_everything_up_to_date(flow_result, flow_project):
    assert_up_to_date(flow_project)
    assert stages_run(dvc(flow_project, "repro")) == set()


def test_an_unchanged_nightly_run_trains_nothing_and_a_clean_clone_pulls_its_outputs(
    flow_result, project, prefect_harness, mlflow_client, tmp_path_factory
):
    """The nightly again, data unchanged: fetch runs (it always does), writes the same snapshot,
    and DVC skips every other stage: no stage run, no model version; `push` fills the remote."""

    remote = tmp_path_factory.mktemp("dvc-remote")
    dvc(project, "remote", "modify", "--local", "local", "url", str(remote))
    [experiment] = [e for e in mlflow_client.search_experiments() if e.name == "llm-pipeline"]
    runs_before = {r.info.run_id for r in mlflow_client.search_runs([experiment.experiment_id])}
    versions_before = {(v.name, v.version) for v in mlflow_client.search_model_versions("")}

    run_flow(project, push=True)

    new = [r for r in mlflow_client.search_runs([experiment.experiment_id]) if r.info.run_id not in runs_before]
    assert sorted(r.info.run_name for r in new) == ["fetch", "pipeline"]
    assert {(v.name, v.version) for v in mlflow_client.search_model_versions("")} == versions_before
    assert_up_to_date(project)
    assert json.loads(dvc(project, "status", "--cloud", "--json")) == {}  # every output is in the remote

    # a clean clone, as `git clone` gives it (code, params, dvc.yaml, dvc.lock, .dvc/config), then
    # `dvc pull` from that remote: every output arrives, nothing is recomputed
    clone = tmp_path_factory.mktemp("clone")
    for name in ("llm_pipeline", "flows", "params", "local"):
        shutil.copytree(project / name, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "dvc.lock"):
        shutil.copy(project / name, clone / name)
    dvc(clone, "init", "--no-scm", "-q")
    shutil.copy(project / ".dvcignore", clone / ".dvcignore")
    for name in ("config", "config.local"):
        shutil.copy(project / ".dvc" / name, clone / ".dvc" / name)
    dvc(clone, "pull")
    assert_up_to_date(clone)
    model = Path("data") / "finetune" / "classification-gpt" / "model.safetensors"
    assert (clone / model).read_bytes() == (project / model).read_bytes()


def test_a_changed_local_task_file_reruns_exactly_what_reads_it(flow_result, project):
    """A local task no run fine-tunes: ingest (through the snapshot) and evaluate read it; no
    tokenizer, pretraining or fine-tune does, so none of them reruns."""
    write_notes(project / "local" / "notes.jsonl", 90)
    assert stages_run(dvc(project, "repro")) == {"ingest", "evaluate", "report"}
    assert_up_to_date(project)


def data_digests(project: Path) -> dict[str, str]:
    """sha256 of every stage output file under data/ (not the checkpoints, not the run records)."""
    digests = {}
    for path in sorted((project / "data").rglob("*")):
        rel = path.relative_to(project / "data")
        if path.is_file() and rel.parts[0] != "checkpoints" and path.name != RUN_RECORD:
            digests[str(rel)] = sha256_file(path)
    return digests


def leftovers(project: Path) -> list[str]:
    """Temporaries a killed writer could leave: atomic_path's `.<name>.tmp-<pid>`, pretrain's `.partial`."""
    return [str(p) for p in project.rglob(".*") if ".tmp-" in p.name or p.name.endswith(".partial")]


# Each stage is killed once, under `dvc repro` or under the flow (the property is the same: a rerun
# gives byte-identical outputs); the data stages here, the training and evaluation stages under the
# flow below. Last first: a killed stage may leave its outputs half-deleted, which the ones before
# it never read.
KILLED_UNDER_DVC = ["tokenize@unigram", "tokenize@wordpiece", "tokenize@bpe", "ingest", "fetch"]


def test_each_stage_killed_at_a_random_moment_under_dvc_reruns_to_byte_identical_outputs(
    flow_result, project, tmp_path
):
    """SIGKILL `make repro`'s `dvc repro --force` of each stage in turn (its whole process group) at a
    seeded random moment, and once inside DVC's own write of dvc.lock (report's, at a seeded byte: the
    moment chosen, not hoped for); then one `make repro`. Each repro first restores a dvc.lock the
    kill before it tore. It reruns (or takes from DVC's run cache) at most the killed stages; their
    data outputs come out byte-identical, so nothing after them reruns; evaluate's scores equal, no
    temporary left, `dvc status` clean."""
    before, scores = data_digests(project), evaluate_metrics(project)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    marker = tmp_path / "killed-in-lock-write"
    cut = random.Random("report").uniform(0.0, 1.0)
    killed = repro_recovering(
        project, "--force", "--single-item", "report", env=env | kill_in_lock_write(cut, marker, "report")
    )
    assert killed.returncode != 0 and marker.exists(), killed.stdout
    for stage in KILLED_UNDER_DVC:
        # a training stage retrains from step 0 (not from the step-N checkpoint its first run left)
        shutil.rmtree(project / "data" / "checkpoints" / stage.replace("@", "-"), ignore_errors=True)
        cmd = [sys.executable, "-m", "llm_pipeline.dvc_state", "repro", "--force", "--single-item", stage]
        repro = subprocess.Popen(
            cmd,
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes the stage CLI with it
        )
        time.sleep(random.Random(stage).uniform(1.5, 6.0))  # seeded: a failure reproduces
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait(timeout=30)
    rerun = repro_recovering(project)
    assert rerun.returncode == 0, rerun.stdout
    assert stages_run(rerun.stdout) <= {*KILLED_UNDER_DVC, "report"}
    assert data_digests(project) == before
    assert evaluate_metrics(project) == scores
    assert leftovers(project) == []
    assert_up_to_date(project)


def evaluate_metrics(project: Path) -> dict:
    return json.loads((project / "reports" / "evaluate.json").read_text())["metrics"]


def stage_process(stage: str, process: Any, project: Path) -> bool:
    """Is this psutil process the stage's CLI (dvc.yaml's cmd: `llm-pipeline <stage> --params
    params/<stage>.yaml [--set family=|only=|run=<item>]`) running in `project`? Not the `dvc
    repro` that runs it, and not the same stage of another project on this machine."""
    import psutil

    name, _, item = stage.partition("@")
    cmdline = process.info["cmdline"] or []
    if f"params/{name}.yaml" not in cmdline or (item and not any(arg.endswith(f"={item}") for arg in cmdline)):
        return False
    try:
        return Path(process.cwd()) == project
    except psutil.Error:  # ended meanwhile, or not ours to inspect
        return False


# each killed once while the flow runs it (the data stages: under `dvc repro` above; finetune: the
# Prefect-retry test below)
KILLED_IN_THE_FLOW = ["pretrain@bert", "evaluate"]


def test_each_stage_killed_in_the_flow_is_retried_to_byte_identical_outputs(
    flow_result, project, prefect_harness, mlflow_client, monkeypatch, tmp_path
):
    """The flow reruns (force) a pretraining and evaluate; each one's CLI is SIGKILLed (with its
    children) once at a seeded random moment of its run (a fraction of how long the stage took in
    the fixture's flow); Prefect's retry reruns it. Report's `dvc repro`
    is killed inside DVC's write of dvc.lock (at a seeded byte): the retry restores the lock first.
    Then: every data output byte-identical, scores equal, no leftovers, `dvc status` clean, and on
    the dashboard each killed attempt is KILLED (none RUNNING) beside one FINISHED run per stage."""
    import psutil

    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    took = {  # seconds each stage's run took in the fixture's flow (the earliest finished run of its name)
        r.info.run_name: (r.info.end_time - r.info.start_time) / 1000
        for r in sorted(runs, key=lambda r: r.info.start_time, reverse=True)
        if r.info.status == "FINISHED"
    }
    before, scores, seen = data_digests(project), evaluate_metrics(project), {r.info.run_id for r in runs}
    shutil.rmtree(project / "data" / "checkpoints" / "pretrain-bert", ignore_errors=True)  # trains from step 0
    rng = random.Random(11)  # seeded: a failure reproduces
    killed: dict[str, float] = {}

    # the CLI imports for ~2 s before its MLflow run opens; aim anywhere in its lifetime
    delays = {stage: rng.uniform(0.1, 0.9) * (took[stage.replace("@", "-")] + 2.0) for stage in KILLED_IN_THE_FLOW}

    def kill_each_stage_once() -> None:
        deadline = time.monotonic() + 600
        while len(killed) < len(delays) and time.monotonic() < deadline:
            for process in psutil.process_iter(["cmdline", "create_time"]):
                stage = next((s for s in delays if s not in killed and stage_process(s, process, project)), None)
                if stage is None:
                    continue
                time.sleep(max(0.0, process.info["create_time"] + delays[stage] - time.time()))
                with contextlib.suppress(psutil.NoSuchProcess):  # ended before the moment: a miss
                    for victim in [*process.children(recursive=True), process]:
                        victim.kill()
                    killed[stage] = delays[stage]
            time.sleep(0.02)

    marker = tmp_path / "killed-in-lock-write"
    for name, value in kill_in_lock_write(rng.uniform(0.0, 1.0), marker, "report").items():
        monkeypatch.setenv(name, value)
    watcher = threading.Thread(target=kill_each_stage_once, daemon=True)
    watcher.start()
    results = run_flow(project, monkeypatch, force=[*KILLED_IN_THE_FLOW, "report"])
    watcher.join(timeout=10)
    assert set(killed) == set(KILLED_IN_THE_FLOW), killed
    assert marker.exists(), "report's dvc repro was not killed inside its dvc.lock write"
    assert set(results) == STAGE_RUNS
    assert data_digests(project) == before
    assert evaluate_metrics(project) == scores
    assert leftovers(project) == []
    assert_up_to_date(project)
    runs = mlflow_client.search_runs([e.experiment_id for e in mlflow_client.search_experiments()])
    new = [r for r in runs if r.info.run_id not in seen]
    assert not [r.info.run_name for r in new if r.info.status == "RUNNING"]
    for stage in KILLED_IN_THE_FLOW:
        statuses = sorted(r.info.status for r in new if r.info.run_name == stage.replace("@", "-"))
        # killed before its run opened: no KILLED run; after: one, marked by its successor
        assert statuses in (["FINISHED"], ["FINISHED", "KILLED"]), (stage, statuses)


def test_fine_tuned_versions_record_the_pretrained_version_they_came_from(flow_result, flow_client):
    for name, spec in DEFAULT_RUNS.items():
        (version,) = flow_client.search_model_versions(f"name='llm-pipeline-{spec['task']}-{spec['family']}'")
        assert version.tags["pretrained_model"] == f"llm-pipeline-{spec['family']}/1", name
        assert version.tags["task"] == spec["task"]


def test_a_pretrain_change_and_a_new_matrix_run_rerun_only_what_they_touch_through_the_flow(
    flow_result, project, prefect_harness, mlflow_client
):
    """bert's pretraining params change (24 steps, 2 DDP processes over gloo) and a run
    is added to the finetune matrix (classification-t5); the flow runs: exactly pretrain@bert,
    the fine-tunes of bert, the new run, evaluate and report execute (one MLflow run each, plus
    fetch and the pipeline's), t5 is not pretrained again; the 2-process run is one MLflow run
    with one value per logged step (rank 1 opened none), one model folder."""

    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    before = {r.info.run_id for r in mlflow_client.search_runs(experiments)}
    # resume: never, as a 1-process checkpoint may not be resumed on 2 (refused by design)
    trainer = {"devices": 2, "strategy": "ddp", "max_steps": 24, "log_every_n_steps": 2, "resume": "never"}
    set_params(project, "pretrain", {"families": {"bert": {"trainer": trainer}}})
    run = {"task": "classification", "family": "t5", "max_len": 64, "batch_size": 16}
    set_params(
        project, "finetune", {"runs": {"classification-t5": run | {"trainer": QUICK_TRAINER | {"max_steps": 10}}}}
    )
    results = run_flow(project)
    assert results["pretrain-bert"]["steps"] == 24
    new = [r for r in mlflow_client.search_runs(experiments) if r.info.run_id not in before]
    bert_runs = {f"finetune-{name}" for name, spec in DEFAULT_RUNS.items() if spec["family"] == "bert"}
    assert bert_runs  # the default matrix fine-tunes bert; only those runs depend on its pretraining
    expected = {"fetch", "pipeline", "pretrain-bert", *bert_runs, "finetune-classification-t5", "evaluate", "report"}
    assert sorted(r.info.run_name for r in new) == sorted(expected)
    assert all(r.info.status == "FINISHED" for r in new)
    assert sorted(p.name for p in (project / "data" / "pretrain").iterdir()) == ["bert", "gpt", "t5"]  # no leftovers
    [pretrain] = [r for r in new if r.info.run_name == "pretrain-bert"]
    steps = [m.step for m in mlflow_client.get_metric_history(pretrain.info.run_id, "train/loss")]
    assert len(steps) == len(set(steps)) >= 10  # one value per logged step, not one per rank
    assert_up_to_date(project)


# the GPT classifier, retrained under a kill: fewer steps than the fixture's 200, a checkpoint every 20
KILLED_STEPS = 80
KILLED_TRAINER = {"max_steps": KILLED_STEPS, "val_check_interval": 40, "checkpoint_every_n_steps": 20}


def test_dvc_repro_after_a_kill_resumes_the_training_stage(flow_result, project):
    """SIGKILL `dvc repro` (its whole process group, as a lost job would be) while the GPT
    classifier trains; the next `dvc repro` resumes from the newest checkpoint, not step 0."""
    set_params(
        project,
        "finetune",
        {"runs": {"classification-gpt": {"optim": {"lr": 0.002}, "trainer": KILLED_TRAINER}}},
    )
    checkpoints = project / "data" / "checkpoints" / "finetune-classification-gpt"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def manifest() -> dict:
        try:
            return json.loads((checkpoints / "checkpoints.json").read_text())
        except (OSError, ValueError):  # not there, or caught mid-rename
            return {"fingerprint": None, "checkpoints": {}}

    earlier = manifest()["fingerprint"]  # the flow's run left its checkpoints, made with the old lr

    def steps() -> list[int]:
        current = manifest()
        if current["fingerprint"] == earlier:
            return []
        return sorted(entry["step"] for entry in current["checkpoints"].values())

    repro = subprocess.Popen(
        ["dvc", "repro"],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    deadline = time.monotonic() + 300
    while not any(0 < step < KILLED_STEPS for step in steps()):
        assert repro.poll() is None and time.monotonic() < deadline, "no mid-run checkpoint before dvc repro ended"
        time.sleep(0.05)
    os.killpg(repro.pid, signal.SIGKILL)
    repro.wait(timeout=30)
    newest = steps()[-1]
    assert 0 < newest < KILLED_STEPS, steps()
    assert stages_run(dvc(project, "repro")) == {"finetune@classification-gpt", "evaluate", "report"}
    written = json.loads((project / "data" / "finetune" / "classification-gpt" / "manifest.json").read_text())
    record = read_run_record(project / "data" / "finetune" / "classification-gpt")
    assert record["resumed_from"].endswith(".ckpt") and written["counts"]["steps"] == KILLED_STEPS
    resumed = re.search(r"step-(\d+)\.ckpt", record["resumed_from"])
    assert resumed and int(resumed.group(1)) >= newest
    assert_up_to_date(project)


def test_a_prefect_retry_of_a_killed_training_stage_resumes_it(flow_result, project, prefect_harness, monkeypatch):
    """SIGKILL the GPT classifier's training process while the flow runs it: the stage's task
    fails, Prefect's retry reruns `dvc repro -s`, and that run resumes from the checkpoint."""
    import psutil

    set_params(
        project,
        "finetune",
        {"runs": {"classification-gpt": {"optim": {"lr": 0.0015}, "trainer": KILLED_TRAINER}}},
    )
    checkpoints = project / "data" / "checkpoints" / "finetune-classification-gpt"
    earlier = json.loads((checkpoints / "checkpoints.json").read_text())["fingerprint"]
    killed: list[int] = []

    def kill_the_trainer_after_a_new_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                manifest = json.loads((checkpoints / "checkpoints.json").read_text())
            except (OSError, ValueError):
                manifest = {"fingerprint": earlier, "checkpoints": {}}
            if manifest["fingerprint"] != earlier and manifest["checkpoints"]:
                for process in psutil.process_iter(["cmdline"]):
                    if stage_process("finetune@classification-gpt", process, project):
                        process.kill()
                        killed.append(max(e["step"] for e in manifest["checkpoints"].values()))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_the_trainer_after_a_new_checkpoint, daemon=True)
    watcher.start()
    results = run_flow(project, monkeypatch)
    watcher.join(timeout=10)
    assert killed and killed[0] < KILLED_STEPS, "the trainer was not killed mid-run"
    assert results["finetune-classification-gpt"]["steps"] == KILLED_STEPS
    record = read_run_record(project / "data" / "finetune" / "classification-gpt")
    resumed = re.search(r"step-(\d+)\.ckpt", record["resumed_from"] or "")
    assert resumed and int(resumed.group(1)) >= killed[0], record
    assert_up_to_date(project)
