"""Training throughput (tokens/s), model FLOPs utilization (MFU) and the compute a run spent.

MFU = model FLOPs per second / the device's peak; each model counts its FLOPs itself
(llm_pipeline.models.flops). Named apart from Lightning's own ThroughputMonitor, which
counts samples and needs a FLOPs function per batch.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Protocol, cast

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

# dense bf16 tensor-core peak per device, FLOP/s, from the vendor data sheets. Matched in order
# against torch.cuda.get_device_name(), so the more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3"
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


# metrics that are timings: they differ between two runs of the same inputs, so a stage reports
# them (MLflow, reports/) but keeps them out of its outputs' manifests, which DVC hashes
TIMINGS = frozenset({"train_seconds", "tokens_per_sec", "model_flops_per_sec", "mfu"})


class _CountsBatches(Protocol):
    """What a LightningModule offers to be measured (TrainingModule has both)."""

    def count_tokens(self, batch: Any) -> int: ...

    def count_flops(self, batch: Any) -> float: ...


def lookup_peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device by its name; None if not in the table."""
    for key, flops in PEAK_BF16_FLOPS:
        if key in device_name:
            return flops
    return None


class TokenThroughputMonitor(Callback):
    """Log train/tokens_per_sec (and train/mfu on a known GPU) every `every_n_steps` optimizer steps.

    The LightningModule says what a batch is worth through `count_tokens(batch)` and
    `count_flops(batch)` (TrainingModule has both; for a module without them this logs
    nothing). The clock covers data loading, forward, backward and optimizer steps, but not
    validation.

    It also sums tokens and model FLOPs over the whole run (`total_tokens`, `total_flops`, this
    rank's); the sums travel in checkpoints, so a resumed run counts the steps before the kill.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        self.every_n_steps = every_n_steps
        self.peak_flops: float | None = None
        self.total_tokens = 0
        self.total_flops = 0.0
        # (tokens/s, model FLOP/s) of each logged window of this process's steps, the first one
        # (compile, CUDA warm-up) included; not in checkpoints: a resumed run measures its own
        self.windows: list[tuple[float, float]] = []
        self._reset(time.perf_counter())

    def state_dict(self) -> dict[str, Any]:
        return {"total_tokens": self.total_tokens, "total_flops": self.total_flops}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total_tokens = int(state_dict["total_tokens"])
        self.total_flops = float(state_dict["total_flops"])

    def _reset(self, now: float) -> None:
        self._started, self._paused, self._tokens, self._flops = now, 0.0, 0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            self.peak_flops = lookup_peak_flops(torch.cuda.get_device_name(pl_module.device))
        self._reset(time.perf_counter())

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not hasattr(pl_module, "count_tokens"):
            return
        module = cast("_CountsBatches", pl_module)  # e.g. a TrainingModule: count_tokens (checked) and count_flops
        tokens, flops = module.count_tokens(batch), module.count_flops(batch)
        self._tokens += tokens
        self._flops += flops
        self.total_tokens += tokens
        self.total_flops += flops
        if (batch_idx + 1) % trainer.accumulate_grad_batches or trainer.global_step % self.every_n_steps:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # kernels are asynchronous: wait before reading the clock
        now = time.perf_counter()
        seconds = max(now - self._started - self._paused, 1e-9)
        # per device: every rank logs its own rate (rank zero's reaches the logger)
        self.windows.append((self._tokens / seconds, self._flops / seconds))
        pl_module.log("train/tokens_per_sec", self._tokens / seconds, on_step=True, on_epoch=False)
        if self.peak_flops:
            pl_module.log("train/mfu", self._flops / seconds / self.peak_flops, on_step=True, on_epoch=False)
        self._reset(now)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._paused += time.perf_counter() - self._validation_started


def training_compute(trainer: L.Trainer) -> dict[str, float]:
    """`train_tokens` and `train_flops` (model FLOPs, forward + backward) the run spent over all
    its steps and ranks; {} when the trainer has no TokenThroughputMonitor. Data-parallel ranks
    train equal-sized batches, so the total is this rank's times the world size."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning types it loosely
        if isinstance(callback, TokenThroughputMonitor):
            world = trainer.world_size
            return {"train_tokens": float(callback.total_tokens * world), "train_flops": callback.total_flops * world}
    return {}


def steady_throughput(trainer: L.Trainer) -> dict[str, float]:
    """`tokens_per_sec` (this device's) and, on a GPU of known peak, `mfu`: the medians over the
    logged windows after the first, which holds compile and warm-up ({} before a second window).
    Timings: they belong in reports and MLflow, never in an output DVC hashes."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, TokenThroughputMonitor) and len(callback.windows) > 1:
            steady = callback.windows[1:]
            tokens = statistics.median(rate for rate, _ in steady)
            flops = statistics.median(rate for _, rate in steady)
            peak = callback.peak_flops
            return {"tokens_per_sec": tokens, "model_flops_per_sec": flops} | ({"mfu": flops / peak} if peak else {})
    return {}
