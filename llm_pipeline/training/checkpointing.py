"""Training checkpoints a killed run resumes from: written whole or not at all, checksummed, the last K kept.

A stage keeps its checkpoints in its own folder outside its outputs (`data/checkpoints/<stage>-<name>/`),
which neither the stage's staging folder nor `dvc repro` (it deletes a stage's outs before running it)
wipes. Beside the `.ckpt` files, `checkpoints.json` lists each complete one with its step, size and
sha256, and the fingerprint of the params and inputs that produced them:

  {"fingerprint": "...", "checkpoints": {"step-000050.ckpt": {"step": 50, "bytes": ..., "sha256": "..."}}}

A file enters the manifest only after it was written to a temporary name, flushed and renamed, so a kill
or a full disk mid-write leaves the previous checkpoints and the manifest as they were.

`resume` (trainer param): auto resumes from the newest checkpoint that verifies, when its fingerprint is
this run's (other params or inputs: the old checkpoints are removed and training starts at step 0);
never removes them and starts at step 0; a path resumes from that file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.pytorch.callbacks import Callback

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "checkpoints.json"


# trainer keys that do not change the trained weights: a checkpoint made under other values still resumes
# (a changed device count is refused by the data loader's state instead)
NOT_IN_FINGERPRINT = frozenset(
    {
        "accelerator",
        "devices",
        "strategy",
        "num_nodes",
        "val_check_interval",
        "limit_val_batches",
        "log_every_n_steps",
        "checkpoint_every_n_steps",
        "enable_progress_bar",
        "progress_every_seconds",
        "resume",
        "keep_checkpoints",
    }
)


def training_fingerprint(run_params: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """sha256 of what determines the trained weights: a run's params block (its `trainer` less
    NOT_IN_FINGERPRINT) and its input files' sha256 (as io.describe_inputs lists them)."""
    trainer = {k: v for k, v in run_params.get("trainer", {}).items() if k not in NOT_IN_FINGERPRINT}
    parts = [{**run_params, "trainer": trainer}, sorted((str(i["path"]), i["sha256"]) for i in inputs)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_checkpoint_list(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {"fingerprint": None, "checkpoints": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(
            f"{path}: unreadable checkpoint manifest ({exc}); delete the folder or set resume: never"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("checkpoints"), dict):
        raise PipelineError(f"{path}: not a checkpoint manifest (no 'checkpoints' mapping)")
    return manifest


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    _write_atomically(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2).encode()))


def _write_atomically(path: Path, write) -> None:
    """write(file) into `.<name>.tmp`, flush to disk, rename over `path`; on any error remove the
    temporary file and raise a PipelineError naming `path` (the old file, if any, is untouched)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PipelineError(
            f"{path}: write failed ({exc.strerror or exc}); the previous checkpoints in {path.parent} are intact"
        ) from None


class SafeCheckpointIO(CheckpointIO):
    """Lightning's checkpoint I/O: atomic writes, a checksummed manifest, verified weights_only loads."""

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, lambda f: torch.save(checkpoint, f))
        manifest = read_checkpoint_list(path.parent)
        manifest["fingerprint"] = self.fingerprint
        manifest["checkpoints"][path.name] = {
            "step": int(checkpoint.get("global_step", -1)),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
        _write_manifest(path.parent, manifest)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        verify(path)
        try:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure is one line about this file
            raise PipelineError(f"{path}: not a loadable checkpoint ({str(exc).splitlines()[0]})") from None

    def remove_checkpoint(self, path: Any) -> None:
        path = Path(path)
        manifest = read_checkpoint_list(path.parent)
        if manifest["checkpoints"].pop(path.name, None) is not None:
            _write_manifest(path.parent, manifest)  # first the manifest: it never lists a missing file
        path.unlink(missing_ok=True)


def verify(path: Path) -> None:
    """Raise unless `path` matches the sha256 its folder's manifest records for it."""
    if not path.is_file():
        raise PipelineError(f"{path}: checkpoint not found")
    entry = read_checkpoint_list(path.parent)["checkpoints"].get(path.name)
    if entry is None:
        log.warning("%s: not in its folder's %s; loading it unverified (weights only)", path, MANIFEST)
        return
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise PipelineError(
            f"{path}: checksum mismatch (manifest sha256 {entry['sha256'][:12]}…, file {actual[:12]}…): "
            "the file is corrupt; delete it or set resume: never"
        )


def prepare_resume(folder: str | Path, resume: str, fingerprint: str, rank_zero: bool = True) -> Path | None:
    """The checkpoint this run resumes from (None: step 0), per the `resume` param; see the module doc.

    Only global rank zero removes stale checkpoints; every rank reaches the same answer.
    """
    folder = Path(folder)
    if resume not in ("auto", "never"):
        path = Path(resume)
        verify(path)
        return path
    manifest = read_checkpoint_list(folder)
    stale = resume == "never" or (manifest["checkpoints"] and manifest["fingerprint"] != fingerprint)
    if stale:
        if manifest["checkpoints"] and rank_zero:
            why = "resume: never" if resume == "never" else "they were made with other params or inputs"
            log.info("removing the checkpoints in %s (%s); training starts at step 0", folder, why)
        if rank_zero:
            shutil.rmtree(folder, ignore_errors=True)
        return None
    for name, entry in sorted(manifest["checkpoints"].items(), key=lambda item: -item[1]["step"]):
        path = folder / name
        try:
            verify(path)
        except PipelineError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            continue
        log.info("resuming from %s (step %d)", path, entry["step"])
        return path
    return None


class RngState(Callback):
    """Saves torch's (CPU and CUDA), numpy's and python's global RNG states in each checkpoint and
    restores them on resume, so dropout (and anything else drawing from them) continues as if
    never stopped. The data's randomness does not depend on them (see data/loaders/resumable.py)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002  # the global one is the point
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # numpy's key array as a tensor: checkpoints load with weights_only=True
            "numpy": [kind, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
