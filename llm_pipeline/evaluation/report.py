"""The evaluation report as markdown people read: pure functions, no files, no plotting.

`parse_evaluation` checks reports/evaluate.json's schema; `render_summary` turns it into
reports/summary.md: every model beside the baselines of its task, a plain verdict per model,
decoded examples, generations and links to the figures. Nothing here knows task or family
names: tables hold whatever tasks, systems and metrics the JSON holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.compute_curve import Point, crossing_rows

SECTION_TITLES = {"downstream": "Downstream tasks", "pretraining": "Pretraining"}
INPUT_CHARS = 200  # an example's input is cut to this many characters
TEXT_CHARS = 400  # references, predictions, generations


def _as_text(value: Any) -> Any:
    """Inputs of some tasks are pairs or records: show them as compact JSON, not reject them."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return value


Text = Annotated[str, BeforeValidator(_as_text)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Score(_Record):
    section: str
    task: str
    system: str
    kind: Literal["model", "baseline"]
    metric: str
    value: float | None


class Named(_Record):
    system: str
    value: float | None


class Verdict(_Record):
    task: str
    family: str
    metric: str
    value: float | None
    weakest: Named | None = None
    strongest: Named | None = None
    beats_weakest: bool | None = None
    beats_strongest: bool | None = None
    beaten: list[Named] | None = None  # the baselines it beats, and those it does not (older reports: absent)
    not_beaten: list[Named] | None = None


class Example(_Record):
    family: Text = ""
    input: Text = ""
    reference: Text = ""
    prediction: Text = ""


class Generation(_Record):
    prompt: Text
    continuation: Text


class Evaluation(_Record):
    stage: str = "evaluate"
    mlflow_run_id: str | None = None
    scores: list[Score]
    primary: dict[str, str] = {}
    higher_is_better: dict[str, bool] = {}
    verdicts: list[Verdict] = []
    examples: dict[str, list[Example]] = {}
    generations: list[Generation] = []

    def sections(self) -> list[str]:
        """Sections holding scores: downstream, pretraining, then any other, in order of appearance."""
        seen = list(dict.fromkeys(s.section for s in self.scores))
        return [s for s in SECTION_TITLES if s in seen] + [s for s in seen if s not in SECTION_TITLES]

    def tasks(self, section: str) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.scores if s.section == section))

    def lower_is_better(self, metric: str) -> bool:
        return not self.higher_is_better.get(metric, True)

    def primary_metric(self, section: str, task: str) -> str:
        """The task's headline metric: `primary[task]`, else the first metric scored for it."""
        if task in self.primary:
            return self.primary[task]
        return next(s.metric for s in self.scores if s.section == section and s.task == task)

    def verdict(self, task: str, family: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.task == task and v.family == family), None)


def parse_evaluation(data: Any, source: str) -> Evaluation:
    """Validate evaluate.json's content; a problem is one PipelineError line naming `source` and the key."""
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: expected a JSON object at top level, got {type(data).__name__}")
    try:
        return Evaluation.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".") or "<root>"
        got = "" if first["type"] == "missing" else f" (got {first.get('input')!r:.60})"
        more = f"; and {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
        raise PipelineError(f"{source}: {key}: {first['msg']}{got}{more}") from None


# -- formatting ---------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """Scores below 10 (rates in [0, 1], losses) with 3 decimals; larger ones (perplexity, chrF) with one."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def cell(text: str, limit: int | None = None) -> str:
    """Text safe inside a markdown table cell: cut to `limit`, one line, no stray `|` or HTML."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return "<br>".join(line.strip() for line in text.split("\n"))


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def verdict_text(verdict: Verdict | None, n_baselines: int) -> str:
    """One plain phrase: what the model beats, on the task's primary metric."""
    if n_baselines == 0:
        return "no baseline to compare with"
    if verdict is None or verdict.weakest is None or verdict.beats_weakest is None:
        return "no verdict reported"
    if verdict.beaten is not None and verdict.not_beaten is not None and n_baselines > 1:
        return _named_verdict(verdict)
    weak = f"{verdict.weakest.system} ({fmt(verdict.weakest.value)})"
    strong = verdict.strongest
    if strong is None or strong.system == verdict.weakest.system:  # a single baseline
        return f"beats {weak}" if verdict.beats_weakest else f"**does not beat {weak}**"
    strong_text = f"{strong.system} ({fmt(strong.value)})"
    if not verdict.beats_weakest:
        return f"**does not beat even its weakest baseline, {weak}**"
    if verdict.beats_strongest:
        return f"beats every baseline, the strongest being {strong_text}"
    return f"beats {weak} but not {strong_text}"


def _named_verdict(verdict: Verdict) -> str:
    """Which rules the model beats and which it does not, by name (several baselines)."""
    assert verdict.beaten is not None and verdict.not_beaten is not None
    if not verdict.not_beaten:
        strong = verdict.strongest
        best = f", the strongest being {strong.system} ({fmt(strong.value)})" if strong else ""
        return f"beats every baseline{best}"

    def names(rows: list[Named]) -> str:
        return ", ".join(f"{r.system} ({fmt(r.value)})" for r in rows)

    if not verdict.beaten:
        return f"**beats none of its baselines: {names(verdict.not_beaten)}**"
    return f"beats {names(verdict.beaten)}; **not {names(verdict.not_beaten)}**"


def metric_label(ev: Evaluation, metric: str) -> str:
    return f"{metric} (lower is better)" if ev.lower_is_better(metric) else metric


# -- sections -----------------------------------------------------------------------------------

SCORE_HEADER = ("task", "model", "metric", "value", "baselines", "verdict", "other metrics")


def score_rows(ev: Evaluation, section: str) -> list[list[str]]:
    """One row per model of each task of `section`: its primary metric beside every baseline of
    the same task on that metric, the verdict, then its other metrics."""
    rows = []
    for task in ev.tasks(section):
        scores = [s for s in ev.scores if s.section == section and s.task == task]
        metric = ev.primary_metric(section, task)
        baselines = [s for s in scores if s.kind == "baseline" and s.metric == metric]
        baseline_text = ", ".join(f"{cell(b.system)} = {fmt(b.value)}" for b in baselines) or "—"
        models = list(dict.fromkeys(s.system for s in scores if s.kind == "model"))
        for model in models:
            own = [s for s in scores if s.kind == "model" and s.system == model]
            value = next((s.value for s in own if s.metric == metric), None)
            others = ", ".join(f"{cell(s.metric)} = {fmt(s.value)}" for s in own if s.metric != metric) or "—"
            verdict = verdict_text(ev.verdict(task, model), len(baselines))
            rows.append(
                [cell(task), f"**{cell(model)}**", cell(metric_label(ev, metric)), fmt(value), baseline_text]
                + [verdict, others]
            )
        if not models:
            rows.append([cell(task), "—", cell(metric_label(ev, metric)), "—", baseline_text, "no model scored", "—"])
    return rows


def example_rows(examples: Sequence[Example], max_examples: int) -> list[list[str]]:
    """Up to `max_examples` per family, families in order of appearance."""
    kept: dict[str, list[Example]] = {}
    for example in examples:
        group = kept.setdefault(example.family, [])
        if len(group) < max_examples:
            group.append(example)
    return [
        [
            cell(e.family) or "—",
            cell(e.input, INPUT_CHARS),
            cell(e.reference, TEXT_CHARS),
            cell(e.prediction, TEXT_CHARS),
        ]
        for group in kept.values()
        for e in group
    ]


def render_summary(
    ev: Evaluation,
    *,
    source: str = "reports/evaluate.json",
    figures: Sequence[tuple[str, str]] = (),
    max_examples: int = 3,
    curve: tuple[dict[str, Any], list[Point]] | None = None,
) -> str:
    """The whole summary.md. `figures`: (caption, path relative to the summary) pairs; `curve`: a
    saved quality curve (compute_curve.load_curve), for where each model crosses its baselines."""
    lines = ["# Evaluation summary", ""]
    run = f"`{ev.mlflow_run_id}`" if ev.mlflow_run_id else "not tracked"
    lines += [f"MLflow run of the {cell(ev.stage)} stage: {run}. Source: `{source}`.", ""]
    lower = sorted(m for m, higher in ev.higher_is_better.items() if not higher)
    if lower:
        lines += [f"Lower is better for {', '.join(lower)}; higher is better for every other metric.", ""]
    sections = ev.sections() or ["downstream"]
    for section in sections:
        lines += [f"## {SECTION_TITLES.get(section, section.capitalize())}", ""]
        rows = score_rows(ev, section)
        if rows:
            lines += [
                "Each model on its task's primary metric, beside every baseline of the same task.",
                "",
                *table(SCORE_HEADER, rows),
                "",
            ]
        else:
            lines += ["No scores.", ""]
    if curve is not None:
        lines += crossing_section(ev, *curve)
    examples = {task: rows for task, items in ev.examples.items() if (rows := example_rows(items, max_examples))}
    if examples:
        lines += ["## Examples", ""]
        for task, rows in examples.items():
            lines += [f"### {cell(task)}", "", *table(("model", "input", "reference", "prediction"), rows), ""]
    if ev.generations:
        lines += ["## Generations", ""]
        rows = [[cell(g.prompt, TEXT_CHARS), cell(g.continuation, TEXT_CHARS)] for g in ev.generations]
        lines += [*table(("prompt", "continuation"), rows), ""]
    if figures:
        lines += ["## Plots", ""]
        for caption, path in figures:
            lines += [f"![{cell(caption)}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"


def crossing_section(ev: Evaluation, provenance: dict[str, Any], points: list[Point]) -> list[str]:
    """Where each of this evaluation's models (task and family) crosses each baseline on the saved
    curve: the compute its recipe needs before it earns its place, which one run cannot show."""
    scored = {(v.task, v.family) for v in ev.verdicts}
    rows = [
        [
            cell(last.run),
            f"{last.metric} {fmt(last.value)} at {last.flops:.2g} FLOPs",
            f"{cell(name)} {fmt(value)}",
            where,
        ]
        for last, name, value, where in crossing_rows(points)
        if (last.task, last.family) in scored
    ]
    if not rows:
        return []
    return [
        "## Where each model crosses its baselines",
        "",
        f"How much training (FLOPs of pretraining + fine-tuning) this recipe needs before each model beats each "
        f"baseline on the default corpus: `bench/quality_curve.py`, measured at {provenance.get('measured_at', '?')}; "
        f"its levels are {provenance.get('levels', '?')}. Beyond its last level the crossing is a straight line "
        "in log FLOPs through the last two levels: an estimate, not a measurement.",
        "",
        *table(("run", "at the curve's last level", "baseline", "crossing"), rows),
        "",
    ]


def render_tables(ev: Evaluation) -> str:
    """Just the score tables (for the terminal at the end of `make run`)."""
    lines: list[str] = []
    for section in ev.sections():
        lines += [
            f"## {SECTION_TITLES.get(section, section.capitalize())}",
            "",
            *table(SCORE_HEADER, score_rows(ev, section)),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"
