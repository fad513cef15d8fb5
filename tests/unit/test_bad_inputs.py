"""Bad inputs fail early with one PipelineError line that names the file, key or record at fault."""

from __future__ import annotations

import json
import shutil
import sys

import pandas as pd
import pytest
import torch
import yaml

from llm_pipeline.cli import main
from llm_pipeline.config import build_config, load_config, load_params
from llm_pipeline.data.loaders.mlm_nsp import load_nsp_pairs
from llm_pipeline.data.tasks.loading import load_task_split
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import build_model
from llm_pipeline.io import read_manifest, sha256_file, write_json
from llm_pipeline.model_files import load_pretrained, save_classifier, save_pretrained
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.stages import evaluate, tokenize
from llm_pipeline.stages.finetune import FinetuneConfig
from llm_pipeline.stages.pretrain import PretrainConfig
from llm_pipeline.tracking.client import enabled
from llm_pipeline.tracking.runs import NullTracker, search_runs, stage_run
from llm_pipeline.training import trainer as trainer_mod
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

NO_TRACKING = NullTracker()
RUN = {"task": "classification", "family": "gpt"}  # the least a finetune run block needs


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text, text
    return text


def write_params(tmp_path, data: dict, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# -- evaluate --------------------------------------------------------------------------------


@pytest.fixture
def eval_inputs(fake_ingest_dir, tmp_path, monkeypatch):
    """Token shards, an untrained tiny GPT (block 64) and a classifier: what evaluate reads."""
    monkeypatch.setenv("LLM_PIPELINE_TRACKING", "off")
    tok = tokenize.TokenizeConfig(
        input_dir=str(fake_ingest_dir),
        output_dir=str(tmp_path / "tok"),
        progress=False,
        tokenizers={"bpe": {"kind": "bpe", "vocab_size": 300}},
    )
    tokenize.run(tok, NO_TRACKING)
    tok_dir = tmp_path / "tok" / "bpe"
    vocab, sha = read_manifest(tok_dir)["vocab_size"], sha256_file(tok_dir / "tokenizer.json")
    torch.manual_seed(0)
    lm = build_model("gpt", "tiny", vocab)
    assert lm.config.max_seq_len == 64
    pretrained = tmp_path / "pretrain" / "gpt"
    pretrained.mkdir(parents=True)
    save_pretrained(pretrained, lm, sha)
    shutil.copy(tok_dir / "tokenizer.json", pretrained / "tokenizer.json")
    write_json(pretrained / "manifest.json", {"tokenizer": "bpe", "counts": {"seq_len": 64}})

    def save_task_model(labels: list[str]) -> None:
        run = tmp_path / "finetune" / "classification-gpt"
        run.mkdir(parents=True, exist_ok=True)
        save_classifier(run, SequenceClassifier(build_model("gpt", "tiny", vocab), len(labels)), labels, 32, sha)
        shutil.copy(tok_dir / "tokenizer.json", run / "tokenizer.json")
        manifest = {"task": "classification", "kind": "classification", "family": "gpt", "labels": labels}
        write_json(run / "manifest.json", manifest | {"max_len": 32, "tokenizer_sha256": sha})

    params = {
        "tokenize_root": str(tmp_path / "tok"),
        "pretrain_root": str(tmp_path / "pretrain"),
        "tasks_dir": str(fake_ingest_dir / "tasks"),
        "finetune_root": str(tmp_path / "finetune"),
        "runs": [],
        "families": ["gpt"],
        "batch_size": 8,
        "samples": {"prompts": ["The package"], "max_new_tokens": 2},
    }
    return params, save_task_model


def test_evaluate_max_test_tokens_below_one_window(eval_inputs, tmp_path, capsys):
    params, _ = eval_inputs
    cfg = evaluate.EvaluateConfig(**params | {"max_test_tokens": 50})
    with pytest.raises(
        PipelineError,
        match=r"tok/bpe/test.bin: max_test_tokens=50 keeps fewer tokens than one "
        r"window of the model \(65 = max_seq_len 64 \+ 1\)",
    ):
        evaluate.run(cfg, NO_TRACKING)

    path = write_params(tmp_path, params)
    assert main(["evaluate", "--params", str(path), "--set", "max_test_tokens=50"]) == 2
    line = one_line_error(capsys)
    assert "test.bin" in line and "max_test_tokens=50" in line


def test_evaluate_still_runs_with_enough_test_tokens(eval_inputs):
    params, save_task_model = eval_inputs
    save_task_model(["games", "net", "sound"])
    cfg = evaluate.EvaluateConfig(**params | {"max_test_tokens": 200, "runs": ["classification-gpt"]})
    metrics = evaluate.run(cfg, NO_TRACKING).metrics
    assert metrics["eval/lm/gpt/test_tokens"] == 3 * 64 and metrics["eval/classification/gpt/test_examples"] == 24


def test_evaluate_classifier_split_without_a_known_label(eval_inputs, tmp_path, capsys):
    params, save_task_model = eval_inputs
    save_task_model(["alpha", "beta"])  # the test split's labels are games/net/sound
    cfg = evaluate.EvaluateConfig(**params | {"runs": ["classification-gpt"]})
    expected = (
        r"tasks/classification/test.parquet: none of its 24 examples has a "
        r"label the model .*finetune/classification-gpt was trained on"
    )
    with pytest.raises(PipelineError, match=expected) as exc:
        evaluate.run(cfg, NO_TRACKING)
    assert "games, net, sound" in one_line(exc) and "alpha, beta" in str(exc.value)

    path = write_params(tmp_path, params | {"runs": ["classification-gpt"]})
    assert main(["evaluate", "--params", str(path)]) == 2
    assert "classification/test.parquet: none of its" in one_line_error(capsys)


@pytest.mark.parametrize(("prompts", "index"), [(["ok", ""], 1), (["   \n"], 0)])
def test_evaluate_blank_generation_prompt(prompts, index):
    expected = rf"'samples.prompts.{index}': empty or whitespace-only prompt"
    with pytest.raises(PipelineError, match=expected) as exc:
        build_config(evaluate.EvaluateConfig, {"samples": {"prompts": prompts}}, "e.yaml")
    assert one_line(exc).startswith("e.yaml: ")


# -- trainer ---------------------------------------------------------------------------------


def test_no_validation_run_is_refused_by_finetune_and_pretrain(tmp_path, capsys):
    with pytest.raises(
        PipelineError,
        match=r"'runs.r.trainer': trainer.max_steps \(7\) is less than "
        r"trainer.val_check_interval \(200\), so no validation would run",
    ):
        build_config(FinetuneConfig, {"runs": {"r": RUN | {"trainer": {"max_steps": 7}}}})

    repo_params = tokenize.__file__.rsplit("/llm_pipeline/", 1)[0] + "/params/pretrain.yaml"
    with pytest.raises(
        PipelineError,
        match=r"'families.gpt.trainer': trainer.max_steps \(10\) is less than "
        r"trainer.val_check_interval \(250\)",
    ) as exc:
        load_config(PretrainConfig, repo_params, ["families.gpt.trainer.max_steps=10"])
    one_line(exc)

    path = write_params(tmp_path, {"runs": {"r": RUN}})
    assert main(["finetune", "--params", str(path), "--set", "runs.r.trainer.max_steps=5", "--dry-run"]) == 2
    line = one_line_error(capsys)
    assert "trainer.max_steps (5)" in line and "trainer.val_check_interval (200)" in line
    # equal is fine: validation runs once, at the last step
    assert TrainerConfig(max_steps=5, val_check_interval=5).max_steps == 5


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("accelerator", "tpux", "auto, gpu, cpu, cuda, mps, tpu"),
        ("strategy", "dpp", "auto, ddp, ddp_spawn"),
        ("precision", "8-true", "16-mixed, bf16-true, bf16-mixed, 32-true"),
    ],
)
def test_unknown_trainer_names_list_the_allowed_values(key, value, allowed, tmp_path, capsys):
    with pytest.raises(
        PipelineError, match=rf"'runs.r.trainer.{key}': trainer.{key} '{value}' is not one Lightning"
    ) as exc:
        build_config(FinetuneConfig, {"runs": {"r": RUN | {"trainer": {key: value}}}})
    assert allowed in one_line(exc)

    path = write_params(tmp_path, {"runs": {"r": RUN}})
    assert main(["finetune", "--params", str(path), "--set", f"runs.r.trainer.{key}={value}", "--dry-run"]) == 2
    assert f"trainer.{key} '{value}'" in one_line_error(capsys)


def test_known_trainer_names_pass():
    cfg = TrainerConfig(accelerator="gpu", strategy="DDP", precision="bf16-mixed")
    assert (cfg.accelerator, cfg.strategy, cfg.precision) == ("gpu", "DDP", "bf16-mixed")
    TrainerConfig(precision="16")


class NoTrainer:
    def __init__(self, *args, **kwargs):
        raise AssertionError("the Trainer was built before the hardware check")


def test_more_devices_than_the_machine_has(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(trainer_mod.L, "Trainer", NoTrainer)
    with pytest.raises(
        PipelineError,
        match=r"trainer.devices 4: the cpu accelerator has only 2 device\(s\) on "
        r"this machine; use at most 2, -1 \(all\) or 'auto'",
    ) as exc:
        build_trainer(TrainerConfig(accelerator="cpu", devices=4), tmp_path)
    one_line(exc)
    with pytest.raises(PipelineError, match=r"trainer.devices '3': the cpu accelerator has only 2"):
        build_trainer(TrainerConfig(accelerator="cpu", devices="3"), tmp_path)
    with pytest.raises(PipelineError, match=r"trainer.devices 0: expected a positive count"):
        build_trainer(TrainerConfig(accelerator="cpu", devices=0), tmp_path)
    for fine in (2, -1, "auto", "-1"):
        trainer_mod.check_hardware(TrainerConfig(accelerator="cpu", devices=fine))


def test_cuda_devices_on_a_machine_without_enough(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod.L, "Trainer", NoTrainer)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(PipelineError, match=r"trainer.accelerator 'cuda': this machine has no cuda device"):
        build_trainer(TrainerConfig(accelerator="cuda", devices=1), tmp_path)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(PipelineError, match=r"trainer.devices 8: the cuda accelerator has only 2 device"):
        build_trainer(TrainerConfig(accelerator="cuda", devices=8), tmp_path)
    with pytest.raises(PipelineError, match=r"trainer.devices '0,3': device index 3, but the gpu accelerator has only"):
        build_trainer(TrainerConfig(accelerator="gpu", devices="0,3"), tmp_path)
    trainer_mod.check_hardware(TrainerConfig(accelerator="cuda", devices="0,1"))


# -- task splits -----------------------------------------------------------------------------


def test_null_text_cell_in_a_task_split(fake_ingest_dir):
    path = fake_ingest_dir / "tasks" / "classification" / "train.parquet"
    frame = pd.read_parquet(path)
    frame.loc[[3, 7], "text"] = None
    frame.to_parquet(path)
    with pytest.raises(
        PipelineError,
        match=r"classification/train.parquet: column 'text' is null at row 3 "
        r"\(2 null cell\(s\)",
    ) as exc:
        load_task_split(fake_ingest_dir / "tasks", "classification", "train", ("text", "label"))
    one_line(exc)


def test_null_text_cell_in_the_nsp_split(fake_ingest_dir):
    path = fake_ingest_dir / "tasks" / "nsp" / "val.parquet"
    frame = pd.read_parquet(path)
    frame.loc[5, "text_b"] = None
    frame.loc[9, "text_a"] = None
    frame.to_parquet(path)
    with pytest.raises(PipelineError, match=r"nsp/val.parquet: column 'text_b' is null at row 5"):
        # ignored arg-type: no tokenizer on purpose, the check fails before any encoding
        load_nsp_pairs(fake_ingest_dir / "tasks", "val", tokenizer=None)  # type: ignore[arg-type]


# -- params files ----------------------------------------------------------------------------


def test_params_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"batch_size: 4\nname: caf\xe9\n")  # latin-1, not UTF-8
    with pytest.raises(PipelineError, match=r"p.yaml: not UTF-8 text: byte offset 23 \(line 2\)") as exc:
        load_params(path)
    one_line(exc)
    assert main(["finetune", "--params", str(path), "--dry-run"]) == 2
    assert "byte offset 23" in one_line_error(capsys)


def test_params_file_with_broken_yaml_is_one_line(tmp_path, capsys):
    path = write_params(tmp_path, {})
    path.write_text("a: [1\nb: 2\n")
    assert main(["finetune", "--params", str(path), "--dry-run"]) == 2
    assert "p.yaml: not valid YAML" in one_line_error(capsys)


# -- tracking --------------------------------------------------------------------------------


def test_missing_mlflow_is_an_error_unless_tracking_is_off(eval_inputs, tmp_path, monkeypatch, capsys):
    params, _ = eval_inputs
    monkeypatch.delenv("LLM_PIPELINE_TRACKING")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    with pytest.raises(
        PipelineError,
        match=r"mlflow cannot be imported \((ModuleNotFound|Import)Error: .*\); "
        r"install it or set LLM_PIPELINE_TRACKING=off",
    ) as exc:
        enabled()
    one_line(exc)

    path = write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)  # the stage runner writes reports/ under the working directory
    assert main(["evaluate", "--params", str(path)]) == 2
    assert "mlflow cannot be imported" in one_line_error(capsys)
    assert not (tmp_path / "reports").exists()  # refused before the stage ran

    monkeypatch.setenv("LLM_PIPELINE_TRACKING", "off")
    assert enabled() is False
    with stage_run("evaluate") as run:
        assert not run.active


def test_missing_artifact_is_an_error(tracking_dir):
    missing = tracking_dir / "reports" / "gone.json"
    with (
        pytest.raises(PipelineError, match=r"reports/gone.json: artifact to log does not exist") as exc,
        stage_run("ingest") as run,
    ):
        run.log_artifact(missing)
    one_line(exc)
    (finished,) = search_runs()
    assert finished.info.status == "FAILED"
    NullTracker().log_artifact(missing)  # no run, nothing to log: a no-op (e.g. ranks other than 0)


# -- model files (checked in llm_pipeline/model_files.py) ------------------------------------


@pytest.mark.parametrize(
    "keep",
    [
        lambda n: 0,
        lambda n: 100,
        lambda n: n - 10,
        lambda n: n // 2,  # cut in the middle, torch's zip reader raises OSError ([Errno 22] Invalid argument)
    ],
    ids=["empty", "header-only", "tail-cut", "half"],
)
def test_truncated_model_file(tmp_path, keep):
    save_pretrained(tmp_path, build_model("gpt", "tiny", 30), "sha")
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: keep(len(data))])
    with pytest.raises(PipelineError, match=r"model.safetensors: not the weights model.json was saved with") as exc:
        load_pretrained(tmp_path)
    one_line(exc)


def test_a_missing_model_file_is_named(tmp_path):
    save_pretrained(tmp_path, build_model("gpt", "tiny", 30), "sha")
    (tmp_path / "model.json").unlink()
    with pytest.raises(PipelineError, match=r"model.json: model file not found") as exc:
        load_pretrained(tmp_path)
    one_line(exc)


def test_saved_config_with_an_unknown_key(tmp_path):
    save_pretrained(tmp_path, build_model("gpt", "tiny", 30), "sha")
    config = tmp_path / "model.json"
    meta = json.loads(config.read_text())
    meta["config"]["bogus_key"] = 1
    config.write_text(json.dumps(meta))
    with pytest.raises(PipelineError, match=r"model.json: not a valid gpt config: .*bogus_key") as exc:
        load_pretrained(tmp_path)
    one_line(exc)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    save_pretrained(tmp_path, build_model("gpt", "tiny", 30), "sha")
    other = tmp_path / "other"
    other.mkdir()
    save_pretrained(other, build_model("gpt", "tiny", 40), "sha")  # another vocab size
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["weights_sha256"] = json.loads((other / "model.json").read_text())["weights_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    (tmp_path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(PipelineError, match=r"model.safetensors: weights do not fit the saved gpt config") as exc:
        load_pretrained(tmp_path)
    one_line(exc)
