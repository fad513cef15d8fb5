"""report: the evaluation as a page to read, with figures.

Inputs : reports/evaluate.json (the evaluate stage's scores, verdicts, examples, generations)
         reports/plots/<run>_loss.tsv (training-loss curves of pretrain and finetune runs)
         docs/quality_curve.json (bench/quality_curve.py's measured curve: where each model crosses)
Outputs: reports/summary.md; reports/figures/training_loss.png and scores_<task>.png per task
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import Field

from llm_pipeline.config import StageConfig
from llm_pipeline.evaluation.compute_curve import load_curve
from llm_pipeline.evaluation.plots import read_loss_curves, write_figures
from llm_pipeline.evaluation.report import example_rows, parse_evaluation, render_summary, score_rows
from llm_pipeline.io import atomic_path, read_json
from llm_pipeline.stages.base import STAGES, StageResult
from llm_pipeline.tracking.runs import Tracker

log = logging.getLogger(__name__)


class ReportConfig(StageConfig):
    evaluate_report: str = "reports/evaluate.json"  # the evaluate stage's report
    plots_dir: str = "reports/plots"  # <run>_loss.tsv training curves
    output: str = "reports/summary.md"
    figures_dir: str = "reports/figures"  # rewritten whole on each run
    max_examples: int = Field(3, ge=0, description="decoded examples shown per task and model family")
    # bench/quality_curve.py's curve.json: where each model crosses its baselines; null: no such section
    quality_curve: str | None = None


def run(cfg: ReportConfig, tracker: Tracker) -> StageResult:
    evaluation = parse_evaluation(read_json(cfg.evaluate_report), cfg.evaluate_report)
    curves = read_loss_curves(cfg.plots_dir)
    if not curves:
        log.warning("%s: no *_loss.tsv training curves; the report has no loss plot", cfg.plots_dir)
    output, figures_dir = Path(cfg.output), Path(cfg.figures_dir)
    with atomic_path(figures_dir) as tmp:
        drawn = write_figures(evaluation, curves, tmp, STAGES)
    figures = [(caption, figures_dir / path.name) for caption, path in drawn]
    links = [(caption, Path(os.path.relpath(path, output.parent)).as_posix()) for caption, path in figures]
    curve = load_curve(cfg.quality_curve) if cfg.quality_curve else None
    text = render_summary(
        evaluation, source=cfg.evaluate_report, figures=links, max_examples=cfg.max_examples, curve=curve
    )
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s and %d figure(s) in %s", output, len(figures), figures_dir)

    rows = {section: len(score_rows(evaluation, section)) for section in evaluation.sections()}
    verdicts = evaluation.verdicts
    metrics: dict[str, float] = {f"rows/{section}": n for section, n in rows.items()}
    metrics |= {
        "figures": len(figures),
        "loss_curves": len(curves),
        "examples": sum(len(example_rows(v, cfg.max_examples)) for v in evaluation.examples.values()),
        "generations": len(evaluation.generations),
        "verdicts/beat_strongest": sum(bool(v.beats_strongest) for v in verdicts),
        "verdicts/lose_to_weakest": sum(v.beats_weakest is False for v in verdicts),
    }
    return StageResult(
        metrics=metrics,
        report={"summary": str(output), "figures": [str(p) for _, p in figures]},
        artifacts=[output, figures_dir],
    )
