"""Run the promotion gate for the model versions evaluate scored, and record it in the registry.

For each candidate (a registered model version with its primary score on today's test set):
find its registered model's champion; if the champion was scored on another test set, download
it and score it on this one (when its artifacts hold a loadable model folder); decide with
evaluation/promotion.py; then tag the version with both numbers, the test set and the decision,
point the `champion` or `challenger` alias at it, and write the descriptions people read.
A rerun with no new version changes no alias. The registry calls are in llm_pipeline/registry.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.promotion import CHAMPION, Decision, Score, compute_decision
from llm_pipeline.tracking import registry

log = logging.getLogger(__name__)
TAG = "promotion."  # every gate tag on a version starts with it


@dataclass
class Candidate:
    """A registered model version evaluate scored, and how to score another version the same way."""

    registered: str  # registered model name
    version: str
    task: str
    score: Score
    rescore: Callable[[Path], float]  # a saved model folder -> its primary metric on this test set


def score_tags(score: Score) -> dict[str, str]:
    return {
        f"{TAG}metric": score.metric,
        f"{TAG}higher_is_better": str(score.higher_is_better).lower(),
        f"{TAG}score": repr(score.value),
        f"{TAG}test_set": score.test_set,
    }


def gate(candidates: list[Candidate], evaluate_run_id: str | None) -> list[dict[str, Any]]:
    """Every candidate through the gate; one outcome each (for the report and the run's tags)."""
    return [gate_version(c, evaluate_run_id) for c in candidates if math.isfinite(c.score.value)]


def gate_version(c: Candidate, evaluate_run_id: str | None) -> dict[str, Any]:
    champion = registry.model_aliases(c.registered).get(CHAMPION)
    mine = registry.model_version_tags(c.registered, c.version)
    own = score_tags(c.score) | {f"{TAG}evaluate_run": str(evaluate_run_id)}
    if champion == c.version:  # a rerun with no new version: nothing to decide, the score is today's
        registry.set_model_version_tags(c.registered, c.version, own)
        return _outcome(c, champion, c.score.value, Decision(CHAMPION, "already the champion"), changed=False)
    if mine.get(f"{TAG}test_set") == c.score.test_set and f"{TAG}decision" in mine:
        decided = Decision(mine[f"{TAG}decision"], mine.get(f"{TAG}reason", ""))
        return _outcome(c, champion, _float(mine.get(f"{TAG}champion_score")), decided, changed=False)
    champion_score: float | None = None
    same_data, why = True, ""
    if champion is not None:
        champion_score, same_data, why = _champion_score(c, champion, evaluate_run_id)
    decision = compute_decision(c.score.value, champion_score, c.score.higher_is_better, same_data)
    if why:
        decision = Decision(decision.alias, f"{decision.reason} ({why})")
    registry.set_model_version_tags(
        c.registered,
        c.version,
        own
        | {
            f"{TAG}champion_version": champion or "none",
            f"{TAG}champion_score": repr(champion_score) if same_data and champion_score is not None else "none",
            f"{TAG}decision": decision.alias,
            f"{TAG}reason": decision.reason,
        },
    )
    registry.set_model_alias(c.registered, decision.alias, c.version)
    outcome = _outcome(c, champion, champion_score if same_data else None, decision, changed=True)
    _describe(c, outcome)
    return outcome


def _champion_score(c: Candidate, champion: str, evaluate_run_id: str | None) -> tuple[float, bool, str]:
    """(the champion's score, whether it is on this test set, why not); rescores it when its
    recorded score is on another test set and its artifacts hold a loadable model folder."""
    theirs = registry.model_version_tags(c.registered, champion)
    recorded = _float(theirs.get(f"{TAG}score"))
    if theirs.get(f"{TAG}test_set") == c.score.test_set and recorded is not None:
        return recorded, True, ""
    old = recorded if recorded is not None else math.nan
    try:  # a version logged before models were saved-folder pyfuncs has no folder: PipelineError
        with registry.model_folder(f"models:/{c.registered}/{champion}") as folder:
            value = c.rescore(folder)
    except PipelineError as exc:
        log.warning("%s: champion version %s could not be rescored: %s", c.registered, champion, exc)
        return old, False, str(exc)
    registry.set_model_version_tags(
        c.registered,
        champion,
        score_tags(Score(c.score.metric, value, c.score.higher_is_better, c.score.test_set))
        | {f"{TAG}rescored_by": str(evaluate_run_id)},
    )
    return value, True, ""


def _outcome(c: Candidate, champion: str | None, champion_score: float | None, d: Decision, *, changed: bool):
    return {
        "registered_model": c.registered,
        "version": c.version,
        "task": c.task,
        "metric": c.score.metric,
        "higher_is_better": c.score.higher_is_better,
        "score": c.score.value,
        "test_set": c.score.test_set,
        "previous_champion": champion,
        "champion_score": champion_score,
        "decision": d.alias,
        "reason": d.reason,
        "changed": changed,
    }


def _describe(c: Candidate, outcome: dict[str, Any]) -> None:
    """The registered model's headline (its champion's number) and this version's note."""
    s = c.score
    promoted = outcome["decision"] == CHAMPION
    champion = c.version if promoted else outcome["previous_champion"]
    value = s.value if promoted else outcome["champion_score"]
    direction = "higher" if s.higher_is_better else "lower"
    headline = f"{value:.4g}" if value is not None else "not scored on this test set"
    test_set = f"test set {s.test_set[:12]}"
    registry.describe_registered_model(
        c.registered,
        c.version,
        model=(
            f"{c.task}: champion is version {champion}, test {s.metric} {headline} ({direction} is better; "
            f"{test_set}). Aliases: champion (best on the test set), challenger (latest that did not beat it)."
        ),
        version_note=f"test {s.metric} {s.value:.4g} ({test_set}); {outcome['decision']}: {outcome['reason']}",
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "none") else None
    except ValueError:
        return None
