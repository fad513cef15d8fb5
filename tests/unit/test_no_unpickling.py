"""A model folder whose `model.safetensors` is really a pickle that writes a file when unpickled.

Nothing that loads a stage model unpickles it: the pyfunc MLflow loads (directly and through
`mlflow.pyfunc.load_model`), `llm-pipeline generate` and `llm-pipeline export` all refuse the
folder in one line and the file is never written, whether model.json's sha256 still names the
real weights (a swapped file) or was edited to match the crafted one (then the safetensors
parser itself refuses it). Checkpoints: tests/unit/training/test_checkpointing.py.
"""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path

import pytest

from llm_pipeline import cli
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file
from llm_pipeline.mlflow_pyfunc import _load_pyfunc
from llm_pipeline.model_files import MODEL_CONFIG, MODEL_WEIGHTS
from tests.unit.model_folders import write_model_folder


class WritesAFile:
    """Unpickling this calls Path(marker).write_text("pwned")."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (pathlib.Path(self.marker), "pwned")


def crafted(tmp_path: Path, *, sha_matches: bool) -> tuple[Path, Path]:
    """(a gpt model folder with the crafted weights file, the file unpickling it would write)."""
    folder = write_model_folder(tmp_path / ("matching" if sha_matches else "swapped"), "gpt")
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps({"weights": WritesAFile(marker)})
    probe = tmp_path / "probe.txt"  # the payload is live: unpickled, it writes its file
    pickle.loads(pickle.dumps(WritesAFile(probe)))
    assert probe.read_text() == "pwned"
    (folder / MODEL_WEIGHTS).write_bytes(payload)
    if sha_matches:
        meta = json.loads((folder / MODEL_CONFIG).read_text())
        meta["weights_sha256"] = sha256_file(folder / MODEL_WEIGHTS)
        (folder / MODEL_CONFIG).write_text(json.dumps(meta))
    return folder, marker


@pytest.fixture(params=[False, True], ids=["sha-mismatch", "sha-matches"])
def folder_and_marker(request, tmp_path):
    return crafted(tmp_path, sha_matches=request.param)


def test_the_pyfunc_loader_refuses_it(folder_and_marker):
    folder, marker = folder_and_marker
    with pytest.raises(PipelineError) as caught:
        _load_pyfunc(str(folder))
    assert str(caught.value).startswith(str(folder / MODEL_WEIGHTS)), caught.value
    assert not marker.exists()


def test_mlflow_pyfunc_load_model_refuses_it(folder_and_marker, tmp_path):
    import mlflow.pyfunc

    folder, marker = folder_and_marker
    saved = tmp_path / "mlflow-model"
    mlflow.pyfunc.save_model(str(saved), loader_module="llm_pipeline.mlflow_pyfunc", data_path=str(folder))
    with pytest.raises(PipelineError):
        mlflow.pyfunc.load_model(str(saved))
    assert not marker.exists()


@pytest.mark.parametrize("command", ["generate", "export"])
def test_generate_and_export_refuse_it_in_one_line(folder_and_marker, tmp_path, capsys, command):
    folder, marker = folder_and_marker
    args = ["generate", "--model", str(folder), "--prompt", "the package"]
    if command == "export":
        pytest.importorskip("transformers")
        args = ["export", str(folder), str(tmp_path / "hf")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"llm-pipeline {command}: error: {folder / MODEL_WEIGHTS}"), err
    assert not marker.exists()
