"""Every score of one evaluation, beside the baselines of the same task, and what they mean.

A score is (section, task, system, kind, metric, value): system is a family for a model row
and a rule's name for a baseline row. From them come the flat MLflow keys
`eval/<task>/<system>/<metric>` and, per model, a verdict on its task's primary metric: does it
beat the weakest baseline, and the strongest? reports/evaluate.json holds all of it; the report
stage renders it for people.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Section = Literal["downstream", "pretraining"]
Kind = Literal["model", "baseline"]
LOWER_IS_BETTER = frozenset({"ppl"})  # every other metric: higher is better


@dataclass(frozen=True)
class Score:
    section: Section
    task: str
    system: str
    kind: Kind
    metric: str
    value: float


@dataclass
class Scoreboard:
    scores: list[Score] = field(default_factory=list)
    primary: dict[str, str] = field(default_factory=dict)  # task -> the metric verdicts use
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def add(self, section: Section, task: str, system: str, kind: Kind, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self.scores.append(Score(section, task, system, kind, metric, float(value)))

    def value(self, task: str, system: str, metric: str) -> float | None:
        """The score of `system` on `task`'s `metric`, None if not scored."""
        return next((s.value for s in self.scores if (s.task, s.system, s.metric) == (task, system, metric)), None)

    def metrics(self) -> dict[str, float]:
        return {f"eval/{s.task}/{s.system}/{s.metric}": s.value for s in self.scores}

    def verdicts(self) -> list[dict[str, Any]]:
        """Per model row: its primary metric against the weakest and the strongest baseline."""
        out = []
        for task, metric in self.primary.items():
            rows = [s for s in self.scores if s.task == task and s.metric == metric]
            baselines = [s for s in rows if s.kind == "baseline"]
            if not baselines:
                continue
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0  # sign * value: higher is better
            weakest = min(baselines, key=lambda s: sign * s.value)
            strongest = max(baselines, key=lambda s: sign * s.value)
            for model in (s for s in rows if s.kind == "model"):
                named = [
                    (sign * model.value > sign * b.value, {"system": b.system, "value": b.value}) for b in baselines
                ]
                out.append(
                    {
                        "beaten": [b for won, b in named if won],
                        "not_beaten": [b for won, b in named if not won],
                        "task": task,
                        "family": model.system,
                        "metric": metric,
                        "value": model.value,
                        "weakest": {"system": weakest.system, "value": weakest.value},
                        "strongest": {"system": strongest.system, "value": strongest.value},
                        "beats_weakest": sign * model.value > sign * weakest.value,
                        "beats_strongest": sign * model.value > sign * strongest.value,
                    }
                )
        return out

    def to_report(self) -> dict[str, Any]:
        return {
            "scores": [asdict(s) for s in self.scores],
            "primary": dict(self.primary),
            "higher_is_better": {m: False for m in sorted(LOWER_IS_BETTER)},
            "verdicts": self.verdicts(),
            "examples": self.examples,
        }
