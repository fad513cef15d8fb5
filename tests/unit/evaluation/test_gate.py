"""The promotion gate against a real (sqlite) MLflow registry: two versions of one model, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_pipeline.evaluation.gate import Candidate, gate
from llm_pipeline.evaluation.promotion import Score
from llm_pipeline.tracking.client import tracking_uri
from llm_pipeline.tracking.registry import model_aliases, model_version_tags, registered_versions

NAME = "test-classifier"
TEST_SET = "a" * 64


def register_version(root: Path, files: tuple[str, ...] = ("model.json",)) -> str:
    """A model version whose artifacts are `files` (a saved model folder has model.json; no training needed)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    if not client.search_registered_models(f"name='{NAME}'"):
        client.create_registered_model(NAME)
    source = root / f"source-{len(registered_versions(NAME))}"
    source.mkdir(parents=True)
    for name in files:
        (source / name).write_text("{}")
    version = client.create_model_version(NAME, str(source), description="trained: val/f1 0.5")
    return str(version.version)


def candidate(version: str, value: float, test_set: str = TEST_SET, rescore=None) -> Candidate:
    def never(folder: Path) -> float:
        raise AssertionError("the champion was scored on this test set: nothing to rescore")

    return Candidate(NAME, version, "classification", Score("macro_f1", value, True, test_set), rescore or never)


def tags(version: str) -> dict[str, str]:
    return model_version_tags(NAME, version)


def test_a_better_version_takes_the_champion_alias_and_a_worse_one_is_challenger(tracking_dir):
    v1, v2, v3 = (register_version(tracking_dir) for _ in range(3))

    [first] = gate([candidate(v1, 0.60)], "run-1")
    assert first["decision"] == "champion" and model_aliases(NAME) == {"champion": v1}

    [better] = gate([candidate(v2, 0.70)], "run-2")
    assert better["decision"] == "champion" and better["changed"]
    assert model_aliases(NAME) == {"champion": v2}  # the old champion lost the alias
    t2 = tags(v2)
    assert float(t2["promotion.score"]) == 0.70 and float(t2["promotion.champion_score"]) == 0.60
    assert t2["promotion.champion_version"] == v1 and t2["promotion.test_set"] == TEST_SET
    assert t2["promotion.decision"] == "champion" and "0.7 vs 0.6" in t2["promotion.reason"]

    [worse] = gate([candidate(v3, 0.65)], "run-3")
    assert worse["decision"] == "challenger"
    assert model_aliases(NAME) == {"champion": v2, "challenger": v3}  # champion unchanged
    t3 = tags(v3)
    assert float(t3["promotion.score"]) == 0.65 and float(t3["promotion.champion_score"]) == 0.70
    assert t3["promotion.decision"] == "challenger" and "does not beat" in t3["promotion.reason"]

    # what a person reads in the registry: the champion's number, and each version's note
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri())
    assert "champion is version 2, test macro_f1 0.7" in client.get_registered_model(NAME).description
    note = client.get_model_version(NAME, v3).description or ""
    assert note.startswith("trained: val/f1 0.5") and "test macro_f1 0.65" in note and "challenger" in note

    # evaluate again, no new version: no alias moves, nothing is re-decided
    again = gate([candidate(v2, 0.70), candidate(v3, 0.65)], "run-4")
    assert [o["changed"] for o in again] == [False, False]
    assert model_aliases(NAME) == {"champion": v2, "challenger": v3}


@pytest.mark.parametrize("loadable", [True, False])
def test_a_champion_scored_on_another_test_set_is_rescored_on_this_one(tracking_dir, loadable):
    v1 = register_version(tracking_dir, ("model.json",) if loadable else ("model.pth",))
    v2 = register_version(tracking_dir)
    gate([candidate(v1, 0.90, test_set="b" * 64)], "run-1")  # a high score, on an older test set
    seen: list[Path] = []

    def rescore(folder: Path) -> float:
        seen.append(folder)
        assert json.loads((folder / "model.json").read_text()) == {}  # the champion's own saved folder
        return 0.50  # on today's test set the champion scores lower

    [outcome] = gate([candidate(v2, 0.60, rescore=rescore)], "run-2")
    if loadable:
        assert len(seen) == 1 and outcome["decision"] == "champion" and outcome["champion_score"] == 0.50
        assert model_aliases(NAME) == {"champion": v2}
        assert tags(v1)["promotion.test_set"] == TEST_SET  # its score is now today's too
    else:
        assert not seen and outcome["decision"] == "challenger"
        assert outcome["reason"].startswith("champion scored on another test set and could not be rescored")
        assert model_aliases(NAME) == {"champion": v1, "challenger": v2}
        assert tags(v2)["promotion.champion_score"] == "none"
