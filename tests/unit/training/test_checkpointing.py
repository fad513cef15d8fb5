import errno
import json
import pickle
from typing import Any

import pytest
import torch

from llm_pipeline.errors import PipelineError
from llm_pipeline.training import checkpointing
from llm_pipeline.training.checkpointing import SafeCheckpointIO, prepare_resume, training_fingerprint


def save(io: SafeCheckpointIO, step: int) -> None:
    io.save_checkpoint(
        {"global_step": step, "state_dict": {"w": torch.full((3,), float(step))}}, io.folder / f"step-{step:06d}.ckpt"
    )


def listed(folder):
    return json.loads((folder / "checkpoints.json").read_text())


def test_saved_checkpoints_are_listed_with_their_checksums_and_load_verified(tmp_path):
    io = SafeCheckpointIO(tmp_path, "fp")
    save(io, 5)
    save(io, 10)
    manifest = listed(tmp_path)
    assert manifest["fingerprint"] == "fp"
    assert {name: entry["step"] for name, entry in manifest["checkpoints"].items()} == {
        "step-000005.ckpt": 5,
        "step-000010.ckpt": 10,
    }
    assert torch.equal(io.load_checkpoint(tmp_path / "step-000010.ckpt")["state_dict"]["w"], torch.full((3,), 10.0))
    io.remove_checkpoint(tmp_path / "step-000005.ckpt")
    assert list(listed(tmp_path)["checkpoints"]) == ["step-000010.ckpt"]
    assert not (tmp_path / "step-000005.ckpt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints.json", "step-000010.ckpt"]  # no temp files


def test_a_failed_write_names_the_path_and_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = SafeCheckpointIO(tmp_path, "fp")
    save(io, 5)
    before = (tmp_path / "step-000005.ckpt").read_bytes(), (tmp_path / "checkpoints.json").read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(PipelineError) as caught:
        save(io, 10)
    message = str(caught.value)
    assert "\n" not in message and "step-000010.ckpt" in message and "No space left on device" in message
    assert "previous checkpoints" in message
    assert ((tmp_path / "step-000005.ckpt").read_bytes(), (tmp_path / "checkpoints.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints.json", "step-000005.ckpt"]
    monkeypatch.undo()
    assert prepare_resume(tmp_path, "auto", "fp") == tmp_path / "step-000005.ckpt"


def test_a_corrupt_checkpoint_is_refused_in_one_line_and_auto_resume_falls_back(tmp_path):
    io = SafeCheckpointIO(tmp_path, "fp")
    save(io, 5)
    save(io, 10)
    newest = tmp_path / "step-000010.ckpt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=r"step-000010.ckpt: checksum mismatch .* the file is corrupt") as caught:
        prepare_resume(tmp_path, str(newest), "fp")
    assert "\n" not in str(caught.value)
    assert prepare_resume(tmp_path, "auto", "fp") == tmp_path / "step-000005.ckpt"


def test_auto_resumes_only_checkpoints_of_the_same_params_and_never_starts_over(tmp_path):
    save(SafeCheckpointIO(tmp_path / "a", "fp"), 5)
    assert prepare_resume(tmp_path / "a", "auto", "fp") == tmp_path / "a" / "step-000005.ckpt"
    assert prepare_resume(tmp_path / "a", "auto", "other params") is None
    assert not (tmp_path / "a").exists()  # stale checkpoints go, so they cannot mix with the new run's
    save(SafeCheckpointIO(tmp_path / "b", "fp"), 5)
    assert prepare_resume(tmp_path / "b", "never", "fp") is None and not (tmp_path / "b").exists()
    assert prepare_resume(tmp_path / "nothing-yet", "auto", "fp") is None
    with pytest.raises(PipelineError, match="missing.ckpt: checkpoint not found"):
        prepare_resume(tmp_path, str(tmp_path / "missing.ckpt"), "fp")


def test_only_weight_changing_params_and_inputs_enter_the_fingerprint():
    block: dict[str, Any] = {
        "optim": {"lr": 0.1},
        "trainer": {"max_steps": 10, "devices": 1, "resume": "auto", "val_check_interval": 5},
    }
    inputs = [{"path": "tok/manifest.json", "sha256": "aa"}]
    base = training_fingerprint(block, inputs)
    moved = {**block, "trainer": {**block["trainer"], "devices": 4, "resume": "never", "val_check_interval": 2}}
    assert training_fingerprint(moved, inputs) == base
    assert training_fingerprint({**block, "optim": {"lr": 0.2}}, inputs) != base
    assert training_fingerprint({**block, "trainer": {**block["trainer"], "max_steps": 11}}, inputs) != base
    assert training_fingerprint(block, [{"path": "tok/manifest.json", "sha256": "ab"}]) != base


class RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "step-000001.ckpt"
    path.write_bytes(pickle.dumps({"global_step": 1, "payload": RunsCode()}))
    manifest = {
        "fingerprint": "fp",
        "checkpoints": {path.name: {"step": 1, "bytes": 0, "sha256": checkpointing.sha256_file(path)}},
    }
    (tmp_path / "checkpoints.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="not a loadable checkpoint"):
        SafeCheckpointIO(tmp_path, "fp").load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()
