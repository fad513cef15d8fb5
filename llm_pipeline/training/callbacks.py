"""Callbacks for behaviour that cuts across training stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from llm_pipeline.io import atomic_path


class LossCurveWriter(Callback):
    """Write loss curves as TSV files for `dvc plots`.

    `path` gets `step<TAB>train_loss`, one row per optimizer step (mean over accumulated
    micro-batches); `val_path` gets `step<TAB>val_loss` plus any other `val/*` metrics.
    Each file is rewritten whole through a temporary file every `every_n_steps` and at the
    end, so a reader never sees a half-written row. Only global rank zero writes. The rows
    travel in the checkpoints, so a resumed run's curves hold the steps before the kill too.
    """

    def __init__(self, path: str | Path, val_path: str | Path | None = None, every_n_steps: int = 50) -> None:
        self.path = Path(path)
        self.val_path = Path(val_path) if val_path else self.path.with_name(f"{self.path.stem}_val.tsv")
        self.every_n_steps = every_n_steps
        self.train_rows: list[tuple[int, float]] = []
        self.val_rows: list[dict[str, float]] = []
        self._pending: list[float] = []  # micro-batch losses of the optimizer step in progress

    def state_dict(self) -> dict[str, Any]:
        return {"train_rows": list(self.train_rows), "val_rows": list(self.val_rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_rows = [(int(step), float(loss)) for step, loss in state_dict["train_rows"]]
        self.val_rows = list(state_dict["val_rows"])

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.is_global_zero or outputs is None:
            return
        # the module's logged train/loss: the mean over all ranks (outputs["loss"] is this rank's)
        logged = trainer.callback_metrics.get("train/loss")
        # outputs["loss"]: Lightning divided it by accumulate_grad_batches; undo that
        loss = float(logged) if logged is not None else float(outputs["loss"]) * trainer.accumulate_grad_batches
        self._pending.append(loss)
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        self.train_rows.append((trainer.global_step, sum(self._pending) / len(self._pending)))
        self._pending.clear()
        if trainer.global_step % self.every_n_steps == 0:
            self.write()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val_rows.append({"step": trainer.global_step, **metrics})
        self.write()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        """Rewrite both curve files whole (atomically) from the rows so far."""
        _write_tsv(self.path, ["step", "train_loss"], [dict(step=s, train_loss=v) for s, v in self.train_rows])
        # written even before (or without) a validation, header only: dvc.yaml declares it an output
        columns = ["step"] + [f"val_{k}" for k in (self.val_rows[0] if self.val_rows else {}) if k != "step"]
        rows = [{("step" if k == "step" else f"val_{k}"): v for k, v in r.items()} for r in self.val_rows]
        _write_tsv(self.val_path, columns, rows)


class CompileModel(Callback):
    """torch.compile the LightningModule's loss computation (its model and objective together)
    before fit/validate.

    Compiling the model alone left the objective's log-softmax and cross-entropy over the
    (B, T, V) logits eager: compiled GPT ran at 0.93x Hugging Face's compiled twin, whose loss
    is inside its forward; with the loss compiled too, 1.04x (bench/train_step.py --compile).
    The model's parameters are untouched, so checkpoints and state dicts keep their names.
    The first steps are slow while it compiles.
    """

    def __init__(self, **compile_kwargs: Any) -> None:
        self.compile_kwargs = compile_kwargs  # e.g. backend="eager" in tests, mode="max-autotune"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        loss = getattr(pl_module, "objective_loss", None)
        if loss is None:
            raise TypeError(f"{type(pl_module).__name__} has no `objective_loss` to compile")
        # ==, not `is`: each attribute access makes a new bound-method object
        if getattr(pl_module, "compute_loss", None) == loss:  # not compiled yet
            pl_module.compute_loss = torch.compile(loss, **self.compile_kwargs)  # type: ignore[assignment]


def _write_tsv(path: Path, columns: list[str], rows: list[dict[str, float]]) -> None:
    lines = ["\t".join(columns)]
    lines += ["\t".join(_fmt(row.get(c, float("nan"))) for c in columns) for row in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
