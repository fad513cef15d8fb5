"""The promotion gate, pure: does a new model version beat the champion on the same test set?

Each registered model has a `champion` alias. A version scored by evaluate becomes champion
only if its task's primary metric beats the champion's on the same test set (the same test
set digest); otherwise it is the `challenger`. The first version scored is champion. The
MLflow side (aliases, version tags) is in llm_pipeline/tracking/registry.py; the stage that calls both
is llm_pipeline/stages/evaluate.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Decision:
    alias: str  # CHAMPION or CHALLENGER
    reason: str  # one line, for people: logged on the version and on the evaluate run

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION


@dataclass(frozen=True)
class Score:
    """A model's primary metric on one test set."""

    metric: str
    value: float
    higher_is_better: bool
    test_set: str  # compute_test_set_digest of what it was computed on


def compute_test_set_digest(file_sha256s: Sequence[str], selection: Mapping[str, object]) -> str:
    """sha256 of the test split file(s) a score was computed on, and of which of their examples
    were scored (evaluate's caps and seed): a capped subset is another test set, so a score
    on it is not comparable. One file and no selection is that file's own sha256."""
    if len(file_sha256s) == 1 and not selection:
        return file_sha256s[0]
    payload = json.dumps({"files": list(file_sha256s), "selection": dict(selection)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def compute_decision(
    new_score: float, champion_score: float | None, higher_is_better: bool, same_data: bool
) -> Decision:
    """champion_score None: there is no champion yet. same_data False: the two numbers come from
    different test sets (and the champion could not be rescored), so they prove nothing."""
    if champion_score is None:
        return Decision(CHAMPION, "first version scored: no champion to beat")
    if not same_data:
        return Decision(CHALLENGER, "champion scored on another test set and could not be rescored")
    better = new_score > champion_score if higher_is_better else new_score < champion_score
    relation = ("higher" if higher_is_better else "lower") + " is better"
    if better:
        return Decision(CHAMPION, f"beats the champion: {new_score:.6g} vs {champion_score:.6g} ({relation})")
    return Decision(CHALLENGER, f"does not beat the champion: {new_score:.6g} vs {champion_score:.6g} ({relation})")
