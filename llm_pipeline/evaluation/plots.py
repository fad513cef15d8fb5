"""PNG figures for the report: training-loss curves and, per task, the primary metric of each
model beside its baselines.

Drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure` (no pyplot, no global
backend switch), so it works headless and leaves other users of matplotlib alone.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.report import Evaluation, fmt

DPI = 100
LOSS_SUFFIX = "_loss.tsv"  # <plots_dir>/<run>_loss.tsv, written by LossCurveWriter
MODEL_COLOR, BASELINE_COLOR = "#1f77b4", "#9e9e9e"
PNG_METADATA: dict[str, str | None] = {"Software": None}  # no matplotlib version: same input, same bytes


def read_loss_curves(plots_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{run: (steps, train_loss)} from every `<run>_loss.tsv` (header `step<TAB>train_loss`).

    A missing folder is no curves; a file without those columns or with a non-number is an error.
    """
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    folder = Path(plots_dir)
    if not folder.is_dir():
        return curves
    for path in sorted(folder.glob(f"*{LOSS_SUFFIX}")):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = {"step", "train_loss"} - set(reader.fieldnames or [])
            if missing:
                raise PipelineError(f"{path}: header lacks column(s) {', '.join(sorted(missing))}")
            steps, losses = [], []
            for line, row in enumerate(reader, start=2):
                try:
                    steps.append(float(row["step"]))
                    losses.append(float(row["train_loss"]))
                except (TypeError, ValueError):
                    raise PipelineError(f"{path}:{line}: expected numbers, got {row!r}") from None
        if steps:
            curves[path.name.removesuffix(LOSS_SUFFIX)] = (np.asarray(steps), np.asarray(losses))
    return curves


def _plain(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _plain_2_5(value: float, _pos: int | None = None) -> str:
    """Label the minor ticks 2x and 5x a power of ten only: enough to read a log axis, not crowded."""
    leading = f"{value:e}"[0]
    return f"{value:g}" if leading in "25" else ""


def _smooth(values: np.ndarray) -> np.ndarray:
    """Trailing moving average over ~2% of the points (per-step losses are noisy)."""
    window = max(1, len(values) // 50)
    if window == 1:
        return values
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def plot_training_loss(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, stage_order: Sequence[str] = ()
) -> Path:
    """One panel per stage (the run name before its first `-`: pretrain, finetune, ...), in
    `stage_order` (the pipeline's, from the caller: evaluation imports no stage), one line per run;
    log-y when the loss spans more than 10x."""
    groups: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for run, curve in curves.items():
        stage, _, item = run.partition("-")
        groups.setdefault(stage, {})[item or run] = curve
    order = {stage: index for index, stage in enumerate(stage_order)}  # pretrain before finetune
    groups = dict(sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    fig = Figure(figsize=(4.8 * len(groups), 3.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (stage, runs) in zip(axes, groups.items()):
        finite = np.concatenate([loss[np.isfinite(loss)] for _, loss in runs.values()])
        for index, (name, (steps, loss)) in enumerate(runs.items()):
            color = f"C{index % 10}"
            ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, _smooth(loss), color=color, linewidth=1.6, label=name)
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(_plain))  # 0.1, 1, 10 rather than 10^-1 ...
            ax.yaxis.set_minor_formatter(FuncFormatter(_plain_2_5))
        ax.set_title(f"{stage}: training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    return path


def plot_scores(
    title: str, metric: str, bars: Sequence[tuple[str, str, float | None]], lower_is_better: bool, path: Path
) -> Path:
    """Horizontal bars of `metric`: (system, kind, value), models in blue, baselines in grey, values labelled."""
    labels = [system for system, _, _ in bars]
    values = [v if v is not None and math.isfinite(v) else 0.0 for _, _, v in bars]
    colors = [MODEL_COLOR if kind == "model" else BASELINE_COLOR for _, kind, _ in bars]
    fig = Figure(figsize=(6.4, 0.45 * len(bars) + 1.3), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(bars))
    drawn = ax.barh(positions, values, color=colors)
    ax.bar_label(drawn, labels=[fmt(v) for _, _, v in bars], padding=3, fontsize="small")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()  # first system on top
    low, high = min(0.0, *values), max(0.0, *values)
    ax.set_xlim(low * 1.2, high * 1.2 if high > low else 1.0)
    direction = "lower is better" if lower_is_better else "higher is better"
    ax.set_title(f"{title}: {metric} ({direction})", fontsize="medium")
    ax.set_xlabel(metric)
    ax.grid(True, axis="x", alpha=0.3)
    handles = [_patch(MODEL_COLOR, "model"), _patch(BASELINE_COLOR, "baseline")]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the bars
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    return path


def _patch(color: str, label: str):
    from matplotlib.patches import Patch

    return Patch(color=color, label=label)


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "task"


def write_figures(
    ev: Evaluation, curves: dict[str, tuple[np.ndarray, np.ndarray]], folder: Path, stage_order: Sequence[str] = ()
) -> list[tuple[str, Path]]:
    """training_loss.png (when there are curves) and scores_<task>.png per task with scores;
    returns (caption, path) pairs in the order the report shows them."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    if curves:
        written.append(("Training loss", plot_training_loss(curves, folder / "training_loss.png", stage_order)))
    sections = ev.sections()
    seen_tasks = [task for section in sections for task in ev.tasks(section)]
    for section in sections:
        for task in ev.tasks(section):
            metric = ev.primary_metric(section, task)
            scores = [s for s in ev.scores if s.section == section and s.task == task and s.metric == metric]
            if not scores:
                continue
            bars = [(s.system, s.kind, s.value) for s in sorted(scores, key=lambda s: s.kind != "model")]
            shared = seen_tasks.count(task) > 1  # the same task name in two sections: keep both figures
            stem = _file_stem(f"{section}_{task}" if shared else task)
            title = f"{task} ({section})" if shared else task
            path = plot_scores(title, metric, bars, ev.lower_is_better(metric), folder / f"scores_{stem}.png")
            written.append((f"{title}: {metric}", path))
    return written
