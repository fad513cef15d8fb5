"""A full disk, for real: each stage writes onto a small tmpfs that a filler file (or its size) fills.

For ingest's output, tokenize's shards, pretrain's checkpoints and the MLflow artifact store a
model is registered into: the stage CLI fails in one line naming the path (no traceback), the
previous complete output is byte-identical, no temporary is left, and a rerun once space returns
(the filler deleted, or the tmpfs remounted bigger) completes.

Needs root and `mount -t tmpfs` (a container without CAP_SYS_ADMIN skips, saying so).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_pipeline import io as pipeline_io
from llm_pipeline.io import sha256_file
from llm_pipeline.stages import tokenize
from llm_pipeline.tracking.runs import NullTracker
from tests.conftest import make_documents, write_fake_bpe_shards

pytestmark = pytest.mark.integration

PAGE = 4096


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path`, unmounted (lazily if busy) afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with mount -t tmpfs, which needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size // 1024}k", str(path)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def leave_free(mount: Path, keep: int) -> Path:
    """A filler file that leaves about `keep` bytes (whole pages) free on the tmpfs."""
    filler = mount / "filler"
    with open(filler, "ab") as fh:
        fh.write(b"\0" * max(free_bytes(mount) - keep // PAGE * PAGE, 0))
    return filler


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (the filler excluded)."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(stage: str, params: Path, cwd: Path, env: dict[str, str] | None = None, **sets: object):
    args = [sys.executable, "-m", "llm_pipeline.cli", stage, "--params", str(params)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    base = {"LLM_PIPELINE_TRACKING": "off"} if env is None else env
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **base}
    cwd.mkdir(parents=True, exist_ok=True)  # the stage writes reports/ under its working directory
    return subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def assert_one_line(done: subprocess.CompletedProcess, stage: str, path: Path) -> str:
    """The stage failed with exit 2 and one error line naming `path`, and no traceback."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert not any("Traceback" in line for line in lines), done.stderr[-3000:]
    last = lines[-1]
    assert last.startswith(f"llm-pipeline {stage}: error: {path}"), last
    assert "no space left on device" in last.lower(), last
    return last


def assert_no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert not left, left


def test_ingest_output_on_a_full_disk(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = [{"text": text} for text in make_documents(400, seed=3)]
    (docs / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    params = tmp_path / "ingest.yaml"
    with tmpfs(tmp_path / "disk", 4 << 20) as disk:
        out = disk / "ingest"
        config: dict[str, Any] = {
            "output_dir": str(out),
            "cache_dir": str(tmp_path / "cache"),
            "progress": False,
            "sources": [{"kind": "jsonl", "path": str(docs / "a.jsonl")}],
            "cleaning": {"min_chars": 20},
            "dedup": {"near": False},
            "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": "s"},
            "tasks": {t: {"enabled": False} for t in ("qa", "nsp", "generation")},
        }
        params.write_text(yaml.safe_dump(config))
        first = run_cli("ingest", params, tmp_path / "work")
        assert first.returncode == 0, first.stderr[-3000:]
        before = snapshot(out)
        # the next output (other split seed, same size) does not fit: half of it does
        leave_free(disk, used_bytes(disk) // 2)
        params.write_text(yaml.safe_dump({**config, "split": {**config["split"], "seed": "t"}}))
        full = run_cli("ingest", params, tmp_path / "work")
        assert_one_line(full, "ingest", out)
        assert snapshot(out) == before
        assert_no_temporaries(disk)  # no .ingest.tmp-<pid>

        (disk / "filler").unlink()
        again = run_cli("ingest", params, tmp_path / "work")
        assert again.returncode == 0, again.stderr[-3000:]
        assert snapshot(out).keys() == before.keys() and snapshot(out) != before  # the new split
        assert json.loads((out / "manifest.json").read_text())["counts"]["per_split"]["train"]["documents"] > 0


TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "max_steps": 8,
    "val_check_interval": 4,
    "checkpoint_every_n_steps": 4,
    "limit_val_batches": 1,
    "log_every_n_steps": 1,
    "enable_progress_bar": False,
    "keep_checkpoints": 2,
}
GPT = {
    "tokenizer": "bpe",
    "model": {"preset": "tiny", "overrides": {"block_size": 32}},
    "data": {"batch_size": 8, "samples_per_epoch": 64},
    "optim": {"lr": 0.01, "warmup_steps": 2},
    "trainer": TRAINER,
    "register_as": "diskfull-gpt",
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A fake ingest output, its bpe shards, and pretrain params for a tiny GPT."""
    root = tmp_path_factory.mktemp("diskfull")
    ingest = write_fake_bpe_shards(root)
    params = {"families": {"gpt": GPT}, "tokenize_root": str(root / "tok"), "tasks_dir": str(ingest / "tasks")}
    (root / "pretrain.yaml").write_text(yaml.safe_dump(params))
    return root


def pretrain(workspace: Path, out: Path, checkpoints: Path, env: dict[str, str] | None = None, max_steps: int = 8):
    where = {"output_dir": out / "model", "checkpoint_root": checkpoints, "plots_dir": out / "plots"}
    steps = {"families.gpt.trainer.max_steps": max_steps}
    return run_cli("pretrain", workspace / "pretrain.yaml", out, env, item="gpt", **where, **steps)


def test_checkpoints_on_a_full_disk(workspace, tmp_path):
    with tmpfs(tmp_path / "disk", 64 << 20) as disk:
        # one checkpoint's size, from a 4-step run into another folder
        sized = pretrain(workspace, tmp_path / "sized", disk / "sized", max_steps=4)
        assert sized.returncode == 0, sized.stderr[-3000:]
        one = max(p.stat().st_size for p in (disk / "sized").rglob("*.ckpt"))
        subprocess.run(["rm", "-rf", str(disk / "sized")], check=True)
        # room for the step-4 checkpoint and half of the step-8 one
        remount(disk, (used_bytes(disk) + one * 3 // 2) // PAGE * PAGE + 2 * PAGE)
        folder = disk / "ckpt" / "pretrain-gpt"
        full = pretrain(workspace, tmp_path / "out", disk / "ckpt")
        assert_one_line(full, "pretrain", folder / "step-000008.ckpt")
        listed = json.loads((folder / "checkpoints.json").read_text())["checkpoints"]
        assert list(listed) == ["step-000004.ckpt"] and sorted(p.name for p in folder.iterdir()) == [
            "checkpoints.json",
            "step-000004.ckpt",
        ]  # no .step-000008.ckpt.tmp
        assert sha256_file(folder / "step-000004.ckpt") == listed["step-000004.ckpt"]["sha256"]
        assert not (tmp_path / "out" / "model" / "gpt").exists()  # no model from a run that did not finish

        remount(disk, 64 << 20)
        again = pretrain(workspace, tmp_path / "out", disk / "ckpt")
        assert again.returncode == 0, again.stderr[-3000:]
        model = tmp_path / "out" / "model" / "gpt"
        manifest = json.loads((model / "manifest.json").read_text())
        resumed = str(pipeline_io.read_run_record(model).get("resumed_from"))  # the output's run record
        assert resumed.endswith("step-000004.ckpt") and manifest["counts"]["steps"] == 8


def test_model_registration_into_a_full_artifact_store(workspace, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tmpfs(tmp_path / "disk", 16 << 20) as disk:
        env = {"MLFLOW_TRACKING_URI": uri, "LLM_PIPELINE_ARTIFACT_ROOT": str(disk / "mlartifacts")}
        env |= {"LLM_PIPELINE_TRACKING": "on", "MLFLOW_EXPERIMENT_NAME": f"diskfull-{uuid.uuid4().hex[:8]}"}
        first = pretrain(workspace, tmp_path / "out", tmp_path / "ckpt", env, max_steps=4)
        assert first.returncode == 0, first.stderr[-3000:]
        client = MlflowClient(uri)
        (v1,) = client.search_model_versions("name='diskfull-gpt'")
        stored = disk / "mlartifacts"
        before = snapshot(stored)
        weights = next(p for p in stored.rglob("model.safetensors"))
        # the rerun's model does not fit: half of its weights do
        filler = leave_free(disk, weights.stat().st_size // 2)
        full = pretrain(workspace, tmp_path / "out", tmp_path / "ckpt", env, max_steps=4)
        line = assert_one_line(full, "pretrain", stored)
        assert "no version of diskfull-gpt was registered" in line
        # version 1 intact; no half-copied model left (the run's artifacts are logged after it)
        assert snapshot(stored) == before
        assert [v.version for v in client.search_model_versions("name='diskfull-gpt'")] == [v1.version]
        failed = client.search_runs([client.get_run(str(v1.run_id)).info.experiment_id], "attributes.status = 'FAILED'")
        assert len(failed) == 1
        assert_no_temporaries(stored)

        filler.unlink()
        again = pretrain(workspace, tmp_path / "out", tmp_path / "ckpt", env, max_steps=4)
        assert again.returncode == 0, again.stderr[-3000:]
        versions = sorted(int(v.version) for v in client.search_model_versions("name='diskfull-gpt'"))
        assert versions == [int(v1.version), int(v1.version) + 1]


def test_token_shards_on_a_full_disk(workspace, tmp_path):
    params = tmp_path / "tokenize.yaml"
    with tmpfs(tmp_path / "disk", 4 << 20) as disk:
        out = disk / "tok"
        config: dict[str, Any] = {
            "input_dir": str(workspace / "ingest"),
            "output_dir": str(out),
            "progress": False,
            "tokenizers": {"bpe": {"kind": "bpe", "vocab_size": 300}},
        }
        params.write_text(yaml.safe_dump(config))
        tokenize.run(tokenize.TokenizeConfig(**config), NullTracker())  # the previous complete output
        before = snapshot(out)
        shard_bytes = (out / "bpe" / "train.bin").stat().st_size
        # room for the new tokenizer.json, not for all of its train shard
        config["tokenizers"]["bpe"]["vocab_size"] = 320
        params.write_text(yaml.safe_dump(config))
        filler = leave_free(disk, (out / "bpe" / "tokenizer.json").stat().st_size + shard_bytes // 2)
        full = run_cli("tokenize", params, tmp_path / "work")
        assert_one_line(full, "tokenize", out / "bpe")
        assert snapshot(out) == before
        assert_no_temporaries(disk)  # no .bpe.tmp-<pid>

        filler.unlink()
        again = run_cli("tokenize", params, tmp_path / "work")
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads((out / "bpe" / "manifest.json").read_text())["vocab_size"] == 320
