"""Progress lines for logs without a terminal (a Prefect worker's log, `dvc repro > log`).

Lightning's tqdm bar redraws one line with carriage returns: in a file that is one endless
line, or nothing until the end. Without a TTY the trainer turns the bar off and this callback
logs a plain line every `every_seconds` instead (global rank zero only):

  train step 120/1200 (10%) | loss 5.432 | 8,532 tok/s | elapsed 2m10s | ETA 19m30s

and during a long validation `validate batch 40/200`, so the log never goes quiet for long.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("llm_pipeline.progress")


def has_terminal() -> bool:
    return sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog(Callback):
    def __init__(self, every_seconds: float = 20.0, clock=time.monotonic) -> None:
        self.every_seconds = every_seconds
        self.clock = clock
        self._start_time = self._last_line = 0.0
        self._start_step = 0
        self._tokens = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_time = self._last_line = self.clock()
        self._start_step = trainer.global_step  # a resumed run: the rate counts this run's steps only
        self._tokens = 0
        if trainer.is_global_zero:
            log.info("train from step %d to %d", trainer.global_step, trainer.max_steps)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        count_tokens = getattr(pl_module, "count_tokens", None)
        self._tokens += count_tokens(batch) if count_tokens else 0
        now = self.clock()
        if not trainer.is_global_zero or now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        log.info("%s", self.train_line(trainer, outputs, now))

    def train_line(self, trainer: L.Trainer, outputs: Any, now: float) -> str:
        step, total = trainer.global_step, trainer.max_steps
        elapsed = now - self._start_time
        done = step - self._start_step
        parts = [f"train step {step}/{total} ({100 * step / max(total, 1):.0f}%)"]
        logged = trainer.callback_metrics.get("train/loss")
        loss = logged if logged is not None else (outputs or {}).get("loss") if isinstance(outputs, dict) else None
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if self._tokens:
            parts.append(f"{self._tokens / max(elapsed, 1e-9):,.0f} tok/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if done > 0:
            parts.append(f"ETA {format_duration(elapsed / done * (total - step))}")
        return " | ".join(parts)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        now = self.clock()
        if not trainer.is_global_zero or now - self._last_line < self.every_seconds:
            return
        self._last_line = now
        total = trainer.num_val_batches[dataloader_idx] if trainer.num_val_batches else "?"
        log.info("validate batch %d/%s (at train step %d)", batch_idx + 1, total, trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            shown = " | ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
            log.info("validated at step %d: %s", trainer.global_step, shown or "no metrics")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            elapsed = self.clock() - self._start_time
            log.info("train done at step %d in %s", trainer.global_step, format_duration(elapsed))
