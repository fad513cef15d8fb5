"""Lineage: every stage run carries its commit, DVC dep hashes and Prefect ids; a model version
copies them; `llm-pipeline lineage` walks from the registry back to the raw source files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_pipeline.cli import main
from llm_pipeline.tracking.client import PARENT_RUN_ENV, experiment_name, mlflow_client, tracking_uri
from llm_pipeline.tracking.lineage_tags import PREFECT_DEPLOYMENT_ENV, PREFECT_FLOW_RUN_ENV
from llm_pipeline.tracking.registry import model_version_tags, set_model_alias
from llm_pipeline.tracking.runs import stage_run, start_pipeline_run

ROOT = Path(__file__).resolve().parents[2]
RAW_SHA = "f" * 64


def register(name: str, run_id: str, source: Path) -> str:
    """A model version of `run_id` (no model to train: the registry is what is under test)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    source.mkdir(parents=True, exist_ok=True)
    return str(client.create_model_version(name, str(source), run_id=run_id).version)


@pytest.fixture
def chain(tracking_dir, monkeypatch):
    """ingest -> tokenize -> pretrain -> finetune, as the stages tag them, run by a Prefect deployment."""
    monkeypatch.setenv(PREFECT_FLOW_RUN_ENV, "flow-run-123")
    monkeypatch.setenv(PREFECT_DEPLOYMENT_ENV, "llm-pipeline/nightly")
    parent = str(start_pipeline_run("pipeline"))  # the flow's run: its stages tag it too
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    manifest = tracking_dir / "manifest.json"
    manifest.write_text(json.dumps({"inputs": [{"path": "raw/Packages", "sha256": RAW_SHA, "bytes": 3}]}))
    with stage_run("ingest") as ingest:
        ingest.log_datasets([manifest], context="ingest")
        ingest.log_artifact(manifest)
    with stage_run("tokenize-bpe") as tok:
        tok.set_tags({"upstream.ingest": str(ingest.run_id), "tokenizer_sha256.bpe": "t" * 64})
    with stage_run("pretrain-gpt") as pre:
        pre.set_tags({"upstream.tokenize": str(tok.run_id), "tokenizer_sha256": "t" * 64})
        pretrained = register("m-gpt", str(pre.run_id), tracking_dir / "gpt")
    with stage_run("finetune-cls-gpt") as fin:
        fin.set_tags({"upstream.pretrain": str(pre.run_id), "pretrained_model": f"m-gpt/{pretrained}"})
        version = register("m-cls", str(fin.run_id), tracking_dir / "cls")
    set_model_alias("m-cls", "champion", version)
    return {
        "pipeline": parent,
        "ingest": str(ingest.run_id),
        "tokenize": str(tok.run_id),
        "pretrain": str(pre.run_id),
        "finetune": str(fin.run_id),
    }


def is_commit_of_this_checkout(commit: str) -> bool:
    """A commit HEAD has (others may commit to this checkout while the test runs: not `== HEAD`)."""
    check = ["git", "merge-base", "--is-ancestor", commit, "HEAD"]
    return len(commit) == 40 and subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0


def test_runs_and_versions_carry_the_commit_and_the_prefect_ids(chain):
    client = mlflow_client()
    for run_id in chain.values():
        tags = client.get_run(run_id).data.tags
        assert is_commit_of_this_checkout(tags["mlflow.source.git.commit"]) and tags["git.dirty"] in ("true", "false")
        assert tags["prefect.flow_run_id"] == "flow-run-123" and tags["prefect.deployment"] == "llm-pipeline/nightly"
    version = model_version_tags("m-cls", "1")  # copied from its run when the run ended
    run_tags = client.get_run(chain["finetune"]).data.tags
    assert version["mlflow.source.git.commit"] == run_tags["mlflow.source.git.commit"]
    assert version["git.dirty"] == run_tags["git.dirty"] and version["prefect.flow_run_id"] == "flow-run-123"
    assert version["upstream.pretrain"] == chain["pretrain"] and version["pretrained_model"] == "m-gpt/1"
    # ingest's raw files are its dataset inputs: name = path, digest = sha256 (cut to MLflow's 36 chars)
    inputs = client.get_run(chain["ingest"]).inputs
    assert inputs is not None
    (item,) = inputs.dataset_inputs
    assert (item.dataset.name, item.dataset.digest) == ("raw/Packages", RAW_SHA[:36])
    assert {t.key: t.value for t in item.tags}["sha256"] == RAW_SHA


def test_lineage_prints_the_chain_back_to_the_raw_files(chain, capsys):
    assert main(["lineage", "models:/m-cls/1"]) == 0
    assert capsys.readouterr().out.startswith("models:/m-cls/1 = m-cls version 1 (aliases: champion)")
    assert main(["lineage", "models:/m-cls@champion"]) == 0
    out = capsys.readouterr().out
    steps = [("finetune-cls-gpt", "finetune"), ("pretrain-gpt", "pretrain"), ("tokenize-bpe", "tokenize")]
    steps.append(("ingest", "ingest"))
    order = [out.index(f"{name}  (stage {stage}, run {chain[stage]})") for name, stage in steps]
    assert order == sorted(order)  # from the model back to the sources
    assert f"source raw/Packages  sha256 {RAW_SHA}" in out and "pretrained_model m-gpt/1" in out
    assert "deployment llm-pipeline/nightly" in out


def test_a_uri_that_does_not_exist_is_one_line(chain, capsys):
    for uri, message in [
        ("models:/nope@champion", "no registered model named 'nope'"),
        ("models:/m-cls@staging", "has no alias 'staging' (its aliases: champion)"),
        ("models:/m-cls/7", "has no version 7"),
        ("runs:/abc/model", "not a model URI"),
    ]:
        assert main(["lineage", uri]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and uri in err and message in err


@pytest.mark.slow  # git, dvc init and dvc repro as subprocesses
def test_under_dvc_repro_a_run_carries_the_dvc_hashes_dvc_lock_records(tmp_path):
    """A real `dvc repro` (which holds the repo lock while the stage runs): the run's dep tags and
    dataset digests equal the hashes dvc.lock records for the same deps."""
    bin_dir = Path(sys.executable).parent
    (tmp_path / "data" / "d").mkdir(parents=True)
    (tmp_path / "data" / "in.txt").write_text("hello\n")
    (tmp_path / "data" / "d" / "a.txt").write_text("a\n")
    (tmp_path / "use.py").write_text(
        "from pathlib import Path\nfrom llm_pipeline.tracking.runs import stage_run\n"
        "with stage_run('use') as run:\n"
        "    run.log_datasets([], context='use')\n"
        "    Path('out.txt').write_text(run.run_id)\n"
    )
    stage = {"cmd": f"{sys.executable} use.py", "deps": ["data/in.txt", "data/d"], "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(json.dumps({"stages": {"use": stage}}))  # JSON is YAML
    env = os.environ | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "LLM_PIPELINE_ARTIFACT_ROOT": str(tmp_path / "art"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    for cmd in (["git", "init", "-q"], [str(bin_dir / "dvc"), "init", "-q"], [str(bin_dir / "dvc"), "repro", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    import yaml

    locked = {d["path"]: d["md5"] for d in yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["use"]["deps"]}
    assert locked["data/d"].endswith(".dir")
    from mlflow.tracking import MlflowClient

    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run((tmp_path / "out.txt").read_text())
    assert {k.removeprefix("dvc.dep."): v for k, v in run.data.tags.items() if k.startswith("dvc.dep.")} == locked
    assert run.inputs is not None
    assert {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs} == locked


@pytest.mark.slow  # a Prefect test harness (10-15 s)
def test_the_flow_hands_its_flow_run_id_to_the_stage_subprocess(prefect_harness):
    """stage_env (what `dvc repro -s` runs under) names the Prefect flow run; a flow run started
    outside a deployment has no deployment name to pass."""
    from prefect import flow
    from prefect.runtime import flow_run

    from flows.pipeline import stage_env

    @flow
    def probe() -> tuple[dict[str, str], str]:
        return stage_env("parent-run"), str(flow_run.id)

    env, flow_run_id = probe()
    assert env[PREFECT_FLOW_RUN_ENV] == flow_run_id and env[PARENT_RUN_ENV] == "parent-run"
    assert PREFECT_DEPLOYMENT_ENV not in env
    assert PREFECT_FLOW_RUN_ENV not in stage_env(None)  # outside a flow run: nothing to name


def test_the_experiment_opens_on_its_runs_in_the_ui(tracking_dir, monkeypatch):
    """mlflow.experimentKind=custom_model_development: the UI shows training runs, not the empty
    GenAI traces overview; set on a new experiment and on one made before the tag existed."""
    client = mlflow_client()
    old = client.create_experiment(experiment_name())
    with stage_run("ingest"):
        pass
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fresh")
    with stage_run("ingest") as run:
        fresh = client.get_run(str(run.run_id)).info.experiment_id
    for experiment in (old, fresh):
        assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
