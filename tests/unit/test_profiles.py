"""Profiles (llm_pipeline/profiles.py): a params overlay resolved into the params files it runs with."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import yaml

from llm_pipeline.config import load_params
from llm_pipeline.errors import PipelineError
from llm_pipeline.profiles import PROFILE_STAGES, Profile, load_profile, resolve

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "params" / "profiles").glob("*.yaml"))


def project_params() -> dict[str, dict]:
    return {stage: load_params(ROOT / "params" / f"{stage}.yaml") for stage in PROFILE_STAGES}


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_shipped_profiles_resolve(path: Path) -> None:
    profile = load_profile(path)
    resolved = resolve(profile, project_params(), source=str(path))
    assert list(resolved["pretrain"]["families"]) == profile.families
    assert list(resolved["finetune"]["runs"]) == profile.runs + [f"{r}-scratch" for r in profile.scratch]
    assert resolved["evaluate"]["families"] == profile.families


def test_every_key_lands_where_it_is_named() -> None:
    """Random families, runs, twins and step counts: each value reaches its own block and no other
    (the params share their trainer blocks through YAML anchors, which must not leak a change)."""
    params = project_params()
    rng = random.Random(7)
    for _ in range(20):
        families = rng.sample(list(params["pretrain"]["families"]), rng.randint(1, 3))
        eligible = [n for n, r in params["finetune"]["runs"].items() if r["family"] in families]
        if not eligible:
            continue
        runs = rng.sample(eligible, rng.randint(1, len(eligible)))
        trained = [r for r in runs if params["finetune"]["runs"][r].get("method") not in ("none", "lora")]
        scratch = rng.sample(trained, rng.randint(0, len(trained)))
        pre_steps = {f: rng.randint(1, 10_000) for f in families}
        fine_steps = {r: rng.randint(1, 10_000) for r in runs if r in trained}
        batch = rng.choice([8, 16, 64])
        profile = Profile(
            families=families,
            runs=runs,
            scratch=scratch,
            set={
                "pretrain": {f"families.{f}.trainer.max_steps": s for f, s in pre_steps.items()},
                "finetune": {f"runs.{r}.trainer.max_steps": s for r, s in fine_steps.items()},
                "evaluate": {"batch_size": batch},
            },
        )
        resolved = resolve(profile, params)
        for family, steps in pre_steps.items():
            assert resolved["pretrain"]["families"][family]["trainer"]["max_steps"] == steps
        for run, block in resolved["finetune"]["runs"].items():
            base = run.removesuffix("-scratch")
            default = params["finetune"]["runs"][base].get("trainer", {}).get("max_steps")
            assert block.get("trainer", {}).get("max_steps") == fine_steps.get(base, default), run
            assert block.get("init") == (
                "scratch" if run.endswith("-scratch") else params["finetune"]["runs"][base].get("init")
            )
            assert {k: v for k, v in block.items() if k not in ("trainer", "init")} == {
                k: v for k, v in params["finetune"]["runs"][base].items() if k not in ("trainer", "init")
            }
        assert resolved["evaluate"]["batch_size"] == batch
        assert resolved["evaluate"]["runs"] is None  # scores the resolved finetune params' runs
    # the project's params are left as they were
    assert params == project_params()


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"families": ["gpt2"], "runs": ["qa-gpt"]}, "families: 'gpt2' is not in params/pretrain.yaml"),
        ({"families": ["gpt"], "runs": ["qa-gtp"]}, "runs: 'qa-gtp' is not in params/finetune.yaml"),
        (
            {"families": ["bert"], "runs": ["qa-gpt"]},
            "run 'qa-gpt' fine-tunes 'gpt', which the profile does not pretrain",
        ),
        ({"families": ["gpt"], "runs": ["qa-gpt"], "scratch": ["summarization-gpt"]}, "scratch: 'summarization-gpt'"),
        (
            {"families": ["gpt"], "runs": ["qa-gpt"], "set": {"finetune": {"runs.qa-gpt.trainer.max_steps": "many"}}},
            "(its finetune params)",
        ),
        (
            {"families": ["gpt"], "runs": ["qa-gpt"], "set": {"pretrain": {"families.gpt.model.preset": 3}}},
            "(its pretrain params)",
        ),
        (
            {"families": ["gpt"], "runs": ["qa-gpt"], "set": {"pretrain": {"output_dir.x": 1}}},
            "'output_dir' is a value",
        ),
        ({"families": ["gpt"], "runs": ["qa-gpt"], "scratch": ["qa-gpt"]}, "lora"),  # LoRA from scratch: refused
    ],
)
def test_bad_profiles_are_one_line(tmp_path: Path, profile: dict, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(profile))
    with pytest.raises(PipelineError) as info:
        resolve(load_profile(path), project_params(), source=str(path))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_profile_file_is_checked_like_params(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    for text, message in [
        ("families: [gpt]\nrunz: [qa-gpt]\n", "unknown key 'runz'"),
        ("families: []\nruns: [qa-gpt]\n", "'families'"),
        ("families: [gpt]\nruns: [qa-gpt]\nset: {ingest: {a: 1}}\n", "'ingest' is not a stage a profile sets"),
    ]:
        path.write_text(text)
        with pytest.raises(PipelineError, match="p.yaml") as info:
            load_profile(path)
        assert message in str(info.value)


def test_runner_writes_what_runs_in_pipeline_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("profile_run", None)
    import profile_run  # bench/profile_run.py

    profile = Profile(families=["gpt", "bert"], runs=["classification-bert", "qa-gpt"], scratch=["classification-bert"])
    resolved = resolve(profile, project_params())
    assert profile_run.stages(resolved) == [
        ("pretrain", "gpt"),
        ("pretrain", "bert"),
        ("finetune", "classification-bert"),
        ("finetune", "qa-gpt"),
        ("finetune", "classification-bert-scratch"),
        ("evaluate", None),
        ("report", None),
    ]
    profile_run.write_params(ROOT, tmp_path, resolved)
    for stage in PROFILE_STAGES:
        assert load_params(tmp_path / "params" / f"{stage}.yaml") == resolved[stage]
    untouched = {p.name for p in (ROOT / "params").glob("*.yaml")} - {f"{s}.yaml" for s in PROFILE_STAGES}
    for name in untouched:
        assert (tmp_path / "params" / name).read_bytes() == (ROOT / "params" / name).read_bytes()
