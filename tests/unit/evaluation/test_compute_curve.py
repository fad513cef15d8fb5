"""compute_curve: where a run's quality-vs-compute curve crosses a baseline, and the saved curve file."""

from __future__ import annotations

import json
import math
import random
import re

import pytest

from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.compute_curve import Point, crossing, crossing_rows, load_curve, to_json


def point(level: float, value: float, flops: float, baseline: float, higher: bool = True, run: str = "r") -> Point:
    # pretraining and fine-tuning FLOPs split unevenly: only their sum is the x axis
    return Point(level, run, "t", "f", "m", value, higher, 0.7 * flops, 0.3 * flops, {"b": baseline})


def test_ahead_at_the_lowest_level_and_between_levels():
    assert crossing([point(1, 0.5, 1e12, 0.4), point(3, 0.6, 3e12, 0.4)], "b") == (
        "ahead from 1e+12 FLOPs (the lowest level) on"
    )
    curve = [point(1, 0.1, 1e12, 0.4), point(3, 0.3, 3e12, 0.4), point(10, 0.5, 1e13, 0.4)]
    assert crossing(curve, "b") == "crosses between 3e+12 and 1e+13 FLOPs"


def test_beyond_the_last_level_a_straight_line_in_log_flops():
    rng = random.Random(3)
    for _ in range(50):
        higher = rng.random() < 0.5
        sign = 1 if higher else -1
        f1 = 10 ** rng.uniform(11, 14)
        f2 = f1 * 10 ** rng.uniform(0.2, 1.5)
        v1 = rng.uniform(0, 10)
        slope = rng.uniform(0.5, 5)  # gain per decade, in the metric's better direction
        v2 = v1 + sign * slope * math.log10(f2 / f1)
        decades = rng.uniform(0.05, 2.5)
        baseline = v2 + sign * slope * decades
        text = crossing([point(1, v1, f1, baseline, higher), point(2, v2, f2, baseline, higher)], "b")
        found = re.search(r"cross near ([\d.e+]+) FLOPs \(([\d.e+]+)x the last level\)", text)
        assert found, text
        near, times = float(found.group(1)), float(found.group(2))
        assert times == pytest.approx(10**decades, rel=0.06), text  # printed to 2 significant digits
        assert near == pytest.approx(f2 * 10**decades, rel=0.5), text  # printed to 1 significant digit


def test_moving_away_or_far_beyond_is_said_plainly():
    assert "not closing on this trend" in crossing([point(1, 0.3, 1e12, 0.5), point(2, 0.2, 1e13, 0.5)], "b")
    assert "over 1000x" in crossing([point(1, 0.10, 1e12, 0.9), point(2, 0.11, 1e13, 0.9)], "b")
    assert "one level only" in crossing([point(1, 0.1, 1e12, 0.9)], "b")


def test_rows_per_run_and_baseline_from_the_last_level():
    points = [point(1, 0.1, 1e12, 0.4, run="a"), point(3, 0.5, 3e12, 0.4, run="a"), point(1, 0.2, 2e12, 0.3, run="b")]
    rows = crossing_rows(points)
    assert [(last.run, last.level, name, value) for last, name, value, _ in rows] == [
        ("a", 3, "b", 0.4),
        ("b", 1, "b", 0.3),
    ]


def test_the_file_round_trips_and_a_bad_one_is_one_line(tmp_path):
    points = [point(1, 0.1, 1e12, 0.4), point(3, 0.5, 3e12, 0.4)]
    path = tmp_path / "curve.json"
    path.write_text(json.dumps(to_json(points, "abc1234, today", "x the defaults")))
    provenance, loaded = load_curve(path)
    assert loaded == points and provenance == {"measured_at": "abc1234, today", "levels": "x the defaults"}
    path.write_text(json.dumps({"points": [{"level": 1}]}))
    with pytest.raises(PipelineError, match=r"curve\.json: not a quality curve") as info:
        load_curve(path)
    assert "\n" not in str(info.value)
