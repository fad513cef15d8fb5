"""Quality against compute: the points bench/quality_curve.py measures, and where each run's curve
crosses a baseline. The report stage reads a saved curve (params/report.yaml `quality_curve`) to
state, beside one run's scores, how much compute the default recipe needs to beat each baseline.

A curve file is JSON: {"measured_at": "<commits, date, machine>", "levels": "<what 1x is>",
"points": [Point fields..., "flops"]}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.io import read_json


@dataclass
class Point:
    level: float
    run: str
    task: str
    family: str
    metric: str
    value: float
    higher_is_better: bool
    pretrain_flops: float
    finetune_flops: float
    baselines: dict[str, float]  # every baseline of the task at this level (the same rule at each level)

    @property
    def flops(self) -> float:
        return self.pretrain_flops + self.finetune_flops


def crossing(points: list[Point], baseline: str) -> str:
    """Where the run's curve crosses `baseline`: between two levels, already at the lowest, or
    (beyond the last level) where the straight line through the last two points in log FLOPs
    would reach it; "not on this trend" when the last step moved away from it."""
    sign = 1 if points[0].higher_is_better else -1
    gap = [sign * (p.value - p.baselines[baseline]) for p in points]  # > 0: the model is ahead
    if gap[0] > 0:
        return f"ahead from {points[0].flops:.2g} FLOPs (the lowest level) on"
    for before, after, g in zip(points, points[1:], gap[1:], strict=False):
        if g > 0:
            return f"crosses between {before.flops:.2g} and {after.flops:.2g} FLOPs"
    if len(points) < 2:
        return "behind; one level only"
    a, b = points[-2], points[-1]
    slope = sign * (b.value - a.value) / (math.log10(b.flops) - math.log10(a.flops))  # gain per 10x
    if slope <= 0:
        return f"behind at {b.flops:.2g} FLOPs, and not closing on this trend"
    decades = -gap[-1] / slope  # powers of ten of compute still missing
    if decades > 3:
        return f"behind; on the last slope ({slope:+.3g} per 10x) it would need over 1000x the last level"
    needed = b.flops * 10**decades
    return (
        f"behind; on the last slope ({slope:+.3g} per 10x) it would cross near {needed:.1g} FLOPs "
        f"({needed / b.flops:.2g}x the last level)"
    )


def runs_of(points: list[Point]) -> dict[str, list[Point]]:
    """Each run's points, lowest FLOPs first."""
    return {
        run: sorted((p for p in points if p.run == run), key=lambda p: p.flops)
        for run in sorted({p.run for p in points})
    }


def crossing_rows(points: list[Point]) -> list[tuple[Point, str, float, str]]:
    """(the run's last point, baseline, the baseline's value, where the run crosses it) per run and baseline."""
    return [
        (curve[-1], name, value, crossing(curve, name))
        for curve in runs_of(points).values()
        for name, value in sorted(curve[-1].baselines.items())
    ]


def to_json(points: list[Point], measured_at: str, levels: str) -> dict[str, Any]:
    return {
        "measured_at": measured_at,
        "levels": levels,
        "points": [{f.name: getattr(p, f.name) for f in fields(Point)} | {"flops": p.flops} for p in points],
    }


def load_curve(path: str | Path) -> tuple[dict[str, Any], list[Point]]:
    """(the file's provenance keys, its points); one line naming the file when it is not a curve."""
    data = read_json(path)
    names = [f.name for f in fields(Point)]
    try:
        points = [Point(**{name: point[name] for name in names}) for point in data["points"]]
    except (KeyError, TypeError) as exc:
        raise PipelineError(f"{path}: not a quality curve (bench/quality_curve.py writes one): missing {exc}") from None
    return {k: v for k, v in data.items() if k != "points"}, points
