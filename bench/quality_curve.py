"""Quality against compute: how much training before a model beats the rules that need none?

Trains the default recipe at several compute levels, pretraining and fine-tuning together (every
step count of params/pretrain.yaml and params/finetune.yaml times the level: max_steps, warmup
and, where it would exceed the run, val_check_interval), scores each level with
params/evaluate.yaml, and plots each run's primary metric against its training FLOPs (its
family's pretraining plus its own fine-tuning, model FLOPs as the stages count them:
`train_flops` in their reports) beside the baselines of its task, the strong ones included.

    .venv/bin/python bench/quality_curve.py --project . --levels 0.1,0.3,1 --out bench/results/quality_curve

PROJECT: a checkout where ingest and tokenize have run (`make run`, or `dvc repro tokenize`);
nothing in it is changed: each level reads its params and data/ingest, data/tokenize through
links and writes under OUT/level-<L>/ (models, checkpoints, reports; tracking off). A level
whose reports/evaluate.json exists is read, not retrained, so a killed bench goes on where it
stopped (the stages themselves resume from their checkpoints). Writes OUT/curve.json,
OUT/curve.md (the table, with each crossing) and OUT/curve.png.

Cost on 2 CPU cores: about 0.9 hours per 1x level for the default five runs (pretraining gpt,
bert and t5 included), so 0.1,0.3,1 takes about 1.3 hours and 1,3,10 about 13.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from workdirs import SHARED_DATA, link, missing_data, run_stage  # bench/ is on sys.path as the script's folder

from llm_pipeline.evaluation.compute_curve import Point, crossing_rows, to_json

DEFAULT_RUNS = "translation-t5,translation-gpt,summarization-t5,summarization-gpt,classification-bert"


def scaled(steps: int, level: float) -> int:
    return max(1, round(steps * level))


def trainer_overrides(prefix: str, block: dict[str, Any], level: float) -> list[str]:
    """--set overrides that scale one pretrain family's or fine-tune run's step counts."""
    steps = scaled(int(block["trainer"]["max_steps"]), level)
    overrides = [f"{prefix}.trainer.max_steps={steps}", f"{prefix}.trainer.enable_progress_bar=false"]
    if int(block["trainer"]["val_check_interval"]) > steps:  # validate (and checkpoint) at least once
        overrides.append(f"{prefix}.trainer.val_check_interval={steps}")
    warmup = int(block.get("optim", {}).get("warmup_steps", 0))
    if warmup:
        overrides.append(f"{prefix}.optim.warmup_steps={scaled(warmup, level)}")
    return overrides


def run_level(project: Path, out: Path, level: float, runs: list[str]) -> Path:
    """Train and score one level; returns its workdir (reports/ inside)."""
    workdir = out / f"level-{level:g}"
    if (workdir / "reports" / "evaluate.json").is_file():
        print(f"== level {level:g}: scored already ({workdir}), read as it is", flush=True)
        return workdir
    link(workdir, project, ("params", *SHARED_DATA))
    pretrain = yaml.safe_load((project / "params" / "pretrain.yaml").read_text())
    finetune = yaml.safe_load((project / "params" / "finetune.yaml").read_text())
    families = sorted({finetune["runs"][r]["family"] for r in runs})
    print(f"== level {level:g}: pretrain {', '.join(families)}; fine-tune {', '.join(runs)}", flush=True)
    for family in families:
        block = pretrain["families"][family]
        run_stage(workdir, "pretrain", f"item={family}", *trainer_overrides(f"families.{family}", block, level))
    for run in runs:
        run_stage(workdir, "finetune", f"item={run}", *trainer_overrides(f"runs.{run}", finetune["runs"][run], level))
    run_stage(workdir, "evaluate", f"runs={json.dumps(runs)}", f"families={json.dumps(families)}")
    return workdir


def read_points(workdir: Path, level: float, runs: list[str], finetune: dict[str, Any]) -> list[Point]:
    reports = workdir / "reports"
    evaluation = json.loads((reports / "evaluate.json").read_text())
    points = []
    for run in runs:
        spec = finetune["runs"][run]
        task, family = spec["task"], spec["family"]
        metric = evaluation["primary"][task]
        scores = [s for s in evaluation["scores"] if s["task"] == task and s["metric"] == metric]
        value = next(s["value"] for s in scores if s["system"] == family and s["kind"] == "model")
        baselines = {s["system"]: s["value"] for s in scores if s["kind"] == "baseline"}
        pre = json.loads((reports / f"pretrain-{family}.json").read_text())["metrics"]
        fine = json.loads((reports / f"finetune-{run}.json").read_text())["metrics"]
        points.append(
            Point(
                level,
                run,
                task,
                family,
                metric,
                value,
                evaluation["higher_is_better"].get(metric, True),  # it lists the exceptions (ppl)
                pre["train_flops"],
                fine["train_flops"],
                baselines,
            )  # fmt: skip
        )
    return points


def table(points: list[Point]) -> str:
    lines = [
        "| run | metric | level | FLOPs (pretrain + fine-tune) | value | baselines |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p.run, p.level)):
        baselines = ", ".join(f"{name} {value:.3g}" for name, value in sorted(p.baselines.items()))
        lines.append(
            f"| {p.run} | {p.metric} | {p.level:g}x | {p.flops:.3g} ({p.pretrain_flops:.2g} + {p.finetune_flops:.2g}) "
            f"| {p.value:.3g} | {baselines} |"
        )
    lines += ["", "| run | baseline | crossing |", "|---|---|---|"]
    for last, baseline, value, where in crossing_rows(points):
        lines.append(f"| {last.run} | {baseline} ({value:.3g}) | {where} |")
    return "\n".join(lines) + "\n"


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({p.task for p in points})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [p for p in points if p.task == task]
        for run in sorted({p.run for p in mine}):
            curve = sorted((p for p in mine if p.run == run), key=lambda p: p.flops)
            ax.plot([p.flops for p in curve], [p.value for p in curve], marker="o", label=curve[0].family)
        for i, (name, value) in enumerate(sorted(mine[-1].baselines.items())):
            ax.axhline(value, linestyle=("--", ":", "-.")[i % 3], color="grey", linewidth=1)
            ax.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set(title=task, xlabel="training FLOPs (pretrain + fine-tune)", ylabel=mine[0].metric)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def git_commit(project: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True)
    return proc.stdout.strip() or "no git commit"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="see the module docstring")
    parser.add_argument("--project", type=Path, default=Path("."), help="checkout with data/ingest, data/tokenize")
    parser.add_argument("--levels", default="0.1,0.3,1", help="compute levels, times the default steps")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="fine-tune runs of params/finetune.yaml")
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality_curve"))
    args = parser.parse_args(argv)
    project, out = args.project.resolve(), args.out.resolve()
    levels = sorted(float(x) for x in args.levels.split(","))
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    finetune = yaml.safe_load((project / "params" / "finetune.yaml").read_text())
    unknown = [r for r in runs if r not in finetune.get("runs", {})]
    missing = missing_data(project)
    if unknown or missing:
        problem = (
            f"runs not in params/finetune.yaml: {unknown}" if unknown else f"run ingest and tokenize first: {missing}"
        )
        print(f"quality_curve: {project}: {problem}", file=sys.stderr)
        return 2
    points = []
    for level in levels:
        points += read_points(run_level(project, out, level, runs), level, runs, finetune)
    out.mkdir(parents=True, exist_ok=True)
    measured_at = f"{git_commit(project)}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores"
    levels_are = f"x the steps of params/pretrain.yaml and params/finetune.yaml at {git_commit(project)}"
    (out / "curve.json").write_text(json.dumps(to_json(points, measured_at, levels_are), indent=1))
    (out / "curve.md").write_text(table(points))
    plot(points, out / "curve.png")
    print(table(points))
    print(f"wrote {out / 'curve.md'}, {out / 'curve.png'}, {out / 'curve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
