"""Progress lines for logs without a terminal: a real (tiny) fit, a clock that runs fast."""

from __future__ import annotations

import logging
import re

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from llm_pipeline.training import progress
from llm_pipeline.training.progress import ProgressLog, format_duration
from llm_pipeline.training.trainer import TrainerConfig, build_trainer


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def count_tokens(self, batch) -> int:
        return batch[0].shape[0] * 10

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Clock:
    """Each reading is 7 s after the last: a line is due every third reading at every_seconds=20."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 7.0
        return self.now


def test_a_line_at_least_every_interval_with_step_loss_rate_and_eta(caplog):
    loader = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=4)
    trainer = L.Trainer(
        max_steps=12,
        val_check_interval=6,
        limit_val_batches=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ProgressLog(every_seconds=20, clock=Clock())],
    )
    with caplog.at_level(logging.INFO, logger="llm_pipeline.progress"):
        trainer.fit(Tiny(), loader, loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_pipeline.progress"]
    train = [line for line in lines if line.startswith("train step")]
    assert train, lines
    for line in train:
        match = re.fullmatch(
            r"train step (\d+)/12 \(\d+%\) \| loss [\d.]+ \| [\d,]+ tok/s \| elapsed \S+ \| ETA \S+", line
        )
        assert match, line
    # 7 s a reading, a line once 20 s have passed: the steps logged are 3 readings apart
    assert [int(line.split()[2].split("/")[0]) for line in train][:2] == [3, 6]
    assert any(line.startswith("validate batch") for line in lines), lines
    assert any(line.startswith("validated at step 6: val/loss") for line in lines), lines
    assert lines[-1].startswith("train done at step 12")


def test_without_a_terminal_the_bar_gives_way_to_the_lines(tmp_path, monkeypatch):
    for terminal in (True, False):
        monkeypatch.setattr(progress.sys.stderr, "isatty", lambda terminal=terminal: terminal)
        trainer = build_trainer(TrainerConfig(max_steps=10, val_check_interval=5), tmp_path)
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's connector
        assert any(isinstance(c, ProgressLog) for c in callbacks) is not terminal
        assert (trainer.progress_bar_callback is not None) is terminal


def test_durations_read_like_a_person_would_write_them():
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]
