"""`llm-pipeline generate` and `llm-pipeline export` through the CLI: registered and local models,
streamed output, and the one-line errors (a URI that does not exist, a model that cannot write,
a prompt longer than the context)."""

from __future__ import annotations

import pytest

from llm_pipeline import inference
from llm_pipeline.cli import main
from llm_pipeline.tracking.client import tracking_uri
from llm_pipeline.tracking.runs import stage_run
from tests.unit.model_folders import write_model_folder


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"llm-pipeline {command}: error: "), err
    return err[0]


def test_generate_streams_the_registered_models_greedy_continuation(tracking_dir, capsys, monkeypatch):
    folder = write_model_folder(tracking_dir / "gpt", "gpt", seed=2)
    with stage_run("pretrain-gpt") as run:
        run.register_model(folder, "use-gpt")
    pieces: list[str] = []
    loaded = inference.load_model_folder(folder)
    options = inference.build_options({"max_new_tokens": 6})
    want = inference.complete(loaded, {"text": "the package"}, options, on_text=pieces.append)
    writes: list[str] = []

    def write(text: str) -> int:
        writes.append(text)
        return len(text)

    monkeypatch.setattr("sys.stdout.write", write)
    assert main(["generate", "--model", "models:/use-gpt/1", "--prompt", "the package", "--max-new-tokens", "6"]) == 0
    monkeypatch.undo()
    assert "".join(writes) == want + "\n"
    assert writes[:-1] == pieces  # piece by piece, as generated, not one write at the end


def test_generate_fills_a_seq2seq_template_from_fields(tmp_path, capsys):
    fmt = {"input_template": "to {lang}: {input}"}
    folder = write_model_folder(tmp_path / "t5", "t5", kind="seq2seq", fmt=fmt, seed=3)
    args = ["generate", "--model", str(folder), "--prompt", "the package", "--max-new-tokens", "5"]
    assert main([*args, "--field", "lang=de"]) == 0
    loaded = inference.load_model_folder(folder)
    options = inference.build_options({"max_new_tokens": 5})
    assert capsys.readouterr().out == inference.complete(loaded, {"text": "the package", "lang": "de"}, options) + "\n"
    assert main(args) == 2  # the template names lang
    assert "lang" in one_line_error(capsys, "generate")


@pytest.mark.parametrize(("family", "kind"), [("bert", None), ("gpt", "classification")])
def test_generate_refuses_a_model_that_does_not_write_text(tmp_path, capsys, family, kind):
    folder = write_model_folder(tmp_path / "m", family, kind=kind)
    assert main(["generate", "--model", str(folder), "--prompt", "the package"]) == 2
    assert "generate needs a gpt or t5 model" in one_line_error(capsys, "generate")


def test_generate_refuses_a_prompt_longer_than_the_context(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "gpt", "gpt", block_size=16)
    assert main(["generate", "--model", str(folder), "--prompt", "the package provides a library " * 10]) == 2
    assert "longer than the model's context of 16 tokens" in one_line_error(capsys, "generate")


def test_export_writes_a_registered_alias_and_names_a_uri_that_does_not_exist(tracking_dir, capsys):
    folder = write_model_folder(tracking_dir / "bert", "bert")
    with stage_run("pretrain-bert") as run:
        version = run.register_model(folder, "use-bert")
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri()).set_registered_model_alias("use-bert", "champion", str(version))
    assert main(["export", "models:/use-bert@champion", str(tracking_dir / "hf")]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tracking_dir / "hf").iterdir()}
    for uri in ("models:/no-such-model/1", "models:/use-bert@nope", str(tracking_dir / "nowhere")):
        capsys.readouterr()  # what came before (MLflow's logs, the download's progress)
        assert main(["export", uri, str(tracking_dir / "hf2")]) == 2
        assert uri in one_line_error(capsys, "export")
