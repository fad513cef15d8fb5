"""The task x family matrix: every kind of task fine-tuned from every family that can serve it,
registered with its lineage, then scored by evaluate beside its baselines. Tiny presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from llm_pipeline.config import build_config
from llm_pipeline.data.ingest_config import SplitConfig
from llm_pipeline.data.tasks.base import write_task
from llm_pipeline.data.tasks.local import LocalTaskConfig, build_local_task
from llm_pipeline.errors import PipelineError
from llm_pipeline.io import read_run_record
from llm_pipeline.stages import evaluate, finetune, pretrain, tokenize
from llm_pipeline.stages.base import execute
from llm_pipeline.tracking.client import mlflow_client
from llm_pipeline.tracking.registry import (
    model_aliases,
    model_version_tags,
    registered_versions,
    set_model_version_tags,
)
from llm_pipeline.tracking.runs import NullTracker
from tests.conftest import track_into, write_fake_ingest

ROOT = Path(__file__).resolve().parents[3]
TRAINER = {
    "max_steps": 30,
    "val_check_interval": 30,
    "limit_val_batches": 1,
    "enable_progress_bar": False,
    "accelerator": "cpu",
    "devices": 1,
    "log_every_n_steps": 5,
}
TOKENIZERS = {
    "bpe": {"kind": "bpe", "vocab_size": 300},
    "wordpiece": {"kind": "wordpiece", "vocab_size": 300},
    "unigram": {"kind": "unigram", "vocab_size": 300, "extra_ids": 20},
}
PRETRAIN = {
    "gpt": {"tokenizer": "bpe", "model": {"preset": "tiny", "overrides": {"block_size": 64}}},
    "bert": {"tokenizer": "wordpiece", "model": {"preset": "tiny"}, "data": {"seq_len": 48}},
    "t5": {"tokenizer": "unigram", "model": {"preset": "tiny"}, "data": {"seq_len": 32}},
}
ECHO_T5 = {"input_template": "first words of {lang}: {input}", "max_source_len": 24, "max_target_len": 8}
ECHO_GPT = {"input_template": "{input}\nFirst ({lang}):", "target_template": " {target}", "max_source_len": 24}
RUNS: dict[str, dict[str, Any]] = {
    "classification-bert": {"task": "classification", "family": "bert", "max_len": 32},
    "classification-gpt": {"task": "classification", "family": "gpt", "max_len": 32},
    "classification-t5": {"task": "classification", "family": "t5", "max_len": 32, "method": "lora"},
    "echo-t5": {"task": "echo", "family": "t5", "format": ECHO_T5},
    "echo-t5-scratch": {"task": "echo", "family": "t5", "format": ECHO_T5, "init": "scratch"},  # the ablation
    "echo-gpt": {"task": "echo", "family": "gpt", "format": ECHO_GPT | {"max_target_len": 8}, "method": "lora"},
    "generation-gpt": {"task": "generation", "family": "gpt", "method": "none"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Ingest output, three tokenizers and three tiny pretrained families, tracked in one MLflow db."""
    root = tmp_path_factory.mktemp("matrix")
    with pytest.MonkeyPatch.context() as mp:
        track_into(root, mp)
        mp.chdir(root)  # the stage runner writes reports/ under the working directory
        ingest = write_fake_ingest(root / "ingest")
        tokenize.run(
            tokenize.TokenizeConfig(
                input_dir=str(ingest), output_dir=str(root / "tok"), progress=False, tokenizers=TOKENIZERS
            ),
            NullTracker(),
        )
        families = {
            name: block
            | {
                "optim": {"lr": 1e-2, "warmup_steps": 2},
                "trainer": TRAINER | {"max_steps": 20, "val_check_interval": 20},
            }
            for name, block in PRETRAIN.items()
        }
        for family in families:
            execute(
                "pretrain",
                pretrain.PretrainConfig(
                    item=family,
                    families=families,
                    tokenize_root=str(root / "tok"),
                    tasks_dir=str(ingest / "tasks"),
                    output_dir=str(root / "pretrain"),
                    plots_dir=str(root / "plots"),
                ),
            )
        yield root


@pytest.fixture
def tracked(project, monkeypatch):
    track_into(project, monkeypatch)
    monkeypatch.chdir(project)  # reports/ land in the project
    return project


def finetune_config(project: Path, runs: dict, run: str) -> finetune.FinetuneConfig:
    blocks = {
        name: {"optim": {"lr": 3e-3, "warmup_steps": 3}, "trainer": TRAINER, "batch_size": 16} | spec
        for name, spec in runs.items()
    }
    return finetune.FinetuneConfig(
        runs=blocks,
        item=run,
        tasks_dir=str(project / "ingest" / "tasks"),
        pretrain_root=str(project / "pretrain"),
        output_dir=str(project / "finetune"),
        plots_dir=str(project / "plots"),
    )


def test_every_task_kind_fine_tunes_from_every_family_that_serves_it(tracked):
    project = tracked
    for name in RUNS:
        execute("finetune", finetune_config(project, RUNS, name))
        manifest = json.loads((project / "finetune" / name / "manifest.json").read_text())
        assert (manifest["task"], manifest["family"], manifest["method"]) == (
            RUNS[name]["task"],
            RUNS[name]["family"],
            RUNS[name].get("method", "full"),
        )
        # lineage: the version of the pretrained model it started from, in the run record beside
        # the output (the manifest holds no run ids: equal inputs, equal bytes)
        record = read_run_record(project / "finetune" / name)
        scratch = RUNS[name].get("init") == "scratch"
        assert record["pretrained_model"] == (None if scratch else f"llm-pipeline-{RUNS[name]['family']}/1")
        assert manifest["init"] == ("scratch" if scratch else "pretrained")
        assert "pretrained_model" not in manifest and "mlflow_run_id" not in manifest
    kinds = {n: json.loads((project / "finetune" / n / "manifest.json").read_text())["kind"] for n in RUNS}
    assert kinds == {
        "classification-bert": "classification",
        "classification-gpt": "classification",
        "classification-t5": "classification",
        "echo-t5": "seq2seq",
        "echo-t5-scratch": "seq2seq",
        "echo-gpt": "seq2seq",
        "generation-gpt": "generation",
    }

    # LoRA: only adapters (+ the new head) trained; the adapter file is a small share of the model
    counts = json.loads((project / "finetune" / "echo-gpt" / "manifest.json").read_text())["counts"]
    assert 0 < counts["params/trainable"] < counts["params/total"] / 4
    adapter = project / "finetune" / "echo-gpt" / "adapter.safetensors"
    assert adapter.stat().st_size < (project / "finetune" / "echo-gpt" / "model.safetensors").stat().st_size / 4
    assert not (project / "finetune" / "echo-t5" / "adapter.safetensors").exists()

    # one registered model per pair, its version tagged with where it came from
    client = mlflow_client()
    for name, spec in RUNS.items():
        if spec.get("init") == "scratch":
            continue  # not registered: the one echo-t5 version below is the pretrained run's
        (version,) = registered_versions(f"llm-pipeline-{spec['task']}-{spec['family']}")
        assert version.tags["pretrained_model"] == f"llm-pipeline-{spec['family']}/1"
        run = client.get_run(version.run_id)
        assert run.data.tags["task"] == spec["task"] and run.data.tags["model.family"] == spec["family"]
        assert run.info.run_name == f"finetune-{name}"

    ev = execute(
        "evaluate",
        evaluate.EvaluateConfig(
            tasks_dir=str(project / "ingest" / "tasks"),
            tokenize_root=str(project / "tok"),
            pretrain_root=str(project / "pretrain"),
            finetune_root=str(project / "finetune"),
            runs=list(RUNS),
            max_examples=8,
            decoding={"num_beams": 2},  # max_new_tokens: each run's own max_target_len
            generation={"max_new_tokens": 5},
            tasks={"echo": {"metrics": ["rouge", "qa"], "baselines": ["copy_source", "lead_k"], "by": "lang"}},
            samples={"prompts": ["The package"], "max_new_tokens": 5},
        ),
    )
    m = ev.metrics
    for family in ("bert", "gpt", "t5"):
        assert 0 <= m[f"eval/classification/{family}/macro_f1"] <= 1
    # the label word leads every text: 30 steps of GPT beat always-the-majority
    assert m["eval/classification/gpt/accuracy"] > m["eval/classification/majority/accuracy"]
    for system in ("t5", "gpt", "copy_source", "lead_k"):
        for metric in ("rougeL", "token_f1", "rougeL_de", "rougeL_fr"):
            assert 0 <= m[f"eval/echo/{system}/{metric}"] <= 1
    # lead_k with k = the median target length (3 words) IS the target here: a perfect baseline
    assert m["eval/echo/lead_k/exact_match"] == 1.0
    # the strong classification baseline beside the majority label
    assert 0 <= m["eval/classification/tfidf_logreg/macro_f1"] <= 1
    for system in ("t5", "gpt", "t5-scratch"):
        assert m[f"eval/echo/{system}/decode_budget"] == 8  # the runs' max_target_len
        # does the writer read its input: shuffled-source and empty-source loss minus true-source loss
        true_loss = m[f"eval/echo/{system}/loss_true_source"]
        assert m[f"eval/echo/{system}/source_gain"] == pytest.approx(
            m[f"eval/echo/{system}/loss_shuffled_source"] - true_loss
        )
        assert m[f"eval/echo/{system}/source_gain_empty"] == pytest.approx(
            m[f"eval/echo/{system}/loss_empty_source"] - true_loss
        )
    # copy-source's outputs are longer than the models may write: also scored cut to that budget
    assert 0 <= m["eval/echo/copy_source_8tok/rougeL"] <= 1
    # what pretraining bought: pretrained minus scratch on the primary metric, on the pretrained row
    primary = "rougeL"
    assert m["eval/echo/t5/pretraining_gain"] == pytest.approx(
        m[f"eval/echo/t5/{primary}"] - m[f"eval/echo/t5-scratch/{primary}"]
    )
    assert "eval/echo/t5-scratch/pretraining_gain" not in m
    assert m["eval/generation/gpt/ppl"] < m["eval/generation/unigram/ppl"]
    assert m["eval/lm/gpt/ppl"] < m["eval/lm/unigram/ppl"]
    assert {"eval/nsp/bert/accuracy", "eval/nsp/word_overlap/accuracy", "eval/mlm/bert/accuracy"} <= set(m)
    assert {"eval/span_corruption/t5/accuracy", "eval/span_corruption/sentinels_and_most_frequent/accuracy"} <= set(m)
    report = json.loads((project / "reports" / "evaluate.json").read_text())
    verdict = next(v for v in report["verdicts"] if v["task"] == "echo" and v["family"] == "t5")
    assert verdict["strongest"]["system"] == "lead_k" and verdict["beats_strongest"] is False
    examples = report["examples"]["echo"]
    assert {e["family"] for e in examples} == {"t5", "gpt", "t5-scratch"} and all("reference" in e for e in examples)


def test_a_local_task_is_fine_tuned_and_scored_with_no_code_change(tracked):
    project = tracked
    rows = [{"question": f"colour of thing {i}?", "answer": ("red", "blue")[i % 3 == 0]} for i in range(120)]
    (project / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = LocalTaskConfig(
        name="colours", kind="seq2seq", path=str(project / "mine.jsonl"), format="jsonl",
        input_field="question", target_field="answer",
    )  # fmt: skip
    task, _ = build_local_task(cfg, SplitConfig(val_fraction=0.15, test_fraction=0.15))
    write_task(task, project / "ingest" / "tasks" / "colours")
    runs = {"colours-t5": {"task": "colours", "family": "t5", "format": {"max_source_len": 16, "max_target_len": 4}}}
    execute("finetune", finetune_config(project, runs, "colours-t5"))
    ev = evaluate.run(
        evaluate.EvaluateConfig(
            tasks_dir=str(project / "ingest" / "tasks"),
            tokenize_root=str(project / "tok"),
            pretrain_root=str(project / "pretrain"),
            finetune_root=str(project / "finetune"),
            runs=["colours-t5"],
            families=[],
            decoding={"num_beams": 1, "max_new_tokens": 4},
        ),
        NullTracker(),
    )
    # the default suite of a task params does not list: ROUGE beside copy-source and nearest-question
    assert {"eval/colours/t5/rougeL", "eval/colours/copy_source/rougeL", "eval/colours/nearest_question/rougeL"} <= set(
        ev.metrics
    )
    assert ev.report["primary"]["colours"] == "rougeL"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"task": "echo", "family": "bert"}, r"runs\.bad: task 'echo' is a seq2seq task and bert cannot serve it"),
        ({"task": "generation", "family": "gpt"}, r"runs\.bad: task 'generation' is a generation task with no train"),
        ({"task": "classification", "family": "gpt", "method": "none"}, r"runs\.bad: method none trains nothing"),
        (
            {"task": "classification", "family": "gpt", "method": "lora", "lora": {"target_modules": ["q_proj"]}},
            r"lora\.target_modules: 'q_proj' matches no Linear module",
        ),
        ({"task": "nothing", "family": "gpt"}, r"nothing/test\.parquet: task split not found"),
        (
            {"task": "echo", "family": "t5", "format": {"max_source_len": 3, "max_target_len": 2, "overlong": "drop"}},
            r"runs\.bad\.format: overlong: drop leaves no train pair within max_source_len 3 and max_target_len 2",
        ),
    ],
)
def test_bad_runs_are_refused_in_one_line_before_training(project, spec, message):
    cfg = finetune_config(project, {"bad": spec}, "bad")
    with pytest.raises(PipelineError, match=message) as caught:
        finetune.run(cfg, NullTracker())
    assert "\n" not in str(caught.value)
    assert not (project / "finetune" / "bad").exists()


def test_a_task_with_no_rows_in_a_split_is_refused(project, tmp_path):
    tasks = tmp_path / "tasks"
    for split in ("train", "val", "test"):
        (tasks / "empty").mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"input": ["a b c"] * (split != "val"), "target": ["a"] * (split != "val")})
        frame.to_parquet(tasks / "empty" / f"{split}.parquet")
    cfg = finetune_config(project, {"bad": {"task": "empty", "family": "t5"}}, "bad")
    with pytest.raises(PipelineError, match=r"empty/val\.parquet: no examples"):
        finetune.run(cfg.model_copy(update={"tasks_dir": str(tasks)}), NullTracker())


def test_each_finetune_stage_tracks_only_its_own_block_of_params():
    """Adding a run to the matrix must retrain nothing else: no stage depends on all of `runs`."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["finetune"]
    (params,) = stage["do"]["params"]
    tracked = params["params/finetune.yaml"]
    assert "runs.${key}" in tracked and "runs" not in tracked
    assert stage["foreach"] == "${runs}"
    default_runs = yaml.safe_load((ROOT / "params" / "finetune.yaml").read_text())["runs"]
    pairs = {(r["task"], r["family"]) for r in default_runs.values()}
    # every task, each from the family that suits it, the writers from both (classification-gpt
    # left the default for time: params/finetune.yaml says how to add it back)
    assert {
        ("classification", "bert"),
        ("summarization", "t5"),
        ("translation", "gpt"),
        ("summarization", "gpt"),
        ("translation", "t5"),
        ("qa", "t5"),
        ("qa", "gpt"),
        ("generation", "gpt"),
    } <= pairs


def test_the_promotion_gate_rescores_a_champion_scored_on_another_test_set(tracked):
    """Real models through evaluate's gate: v1 is champion; v2 meets a champion whose recorded
    score is on another test set, so evaluate downloads v1 (its pyfunc's model folder), scores it
    on today's test set and compares like with like."""
    project = tracked
    name = "gate-classification-gpt"
    runs = {"gate-cls": {"task": "classification", "family": "gpt", "max_len": 32, "register_as": name}}
    cfg = evaluate.EvaluateConfig(
        tasks_dir=str(project / "ingest" / "tasks"),
        tokenize_root=str(project / "tok"),
        pretrain_root=str(project / "pretrain"),
        finetune_root=str(project / "finetune"),
        runs=["gate-cls"],
        families=[],
    )
    execute("finetune", finetune_config(project, runs, "gate-cls"))
    first = execute("evaluate", cfg)
    (outcome,) = [o for o in first.report["promotion"] if o["registered_model"] == name]
    assert (outcome["version"], outcome["decision"]) == ("1", "champion")
    v1_score = first.metrics["eval/classification/gpt/macro_f1"]
    assert float(model_version_tags(name, "1")["promotion.score"]) == v1_score
    set_model_version_tags(name, "1", {"promotion.test_set": "an-older-test-set"})

    runs["gate-cls"]["trainer"] = TRAINER | {"max_steps": 10, "val_check_interval": 10, "seed": 7}  # a shorter run
    execute("finetune", finetune_config(project, runs, "gate-cls"))
    second = execute("evaluate", cfg)
    (outcome,) = [o for o in second.report["promotion"] if o["registered_model"] == name]
    assert outcome["version"] == "2" and outcome["champion_score"] == pytest.approx(v1_score)  # v1, rescored
    v1 = model_version_tags(name, "1")
    assert v1["promotion.test_set"] == outcome["test_set"] and v1["promotion.rescored_by"] != "None"
    v2_score = second.metrics["eval/classification/gpt/macro_f1"]
    expected = "champion" if v2_score > v1_score else "challenger"
    assert outcome["decision"] == expected and model_aliases(name)[expected] == "2"
    # the evaluate run says the same
    run_id = json.loads((project / "reports" / "evaluate.json").read_text())["mlflow_run_id"]
    tags = mlflow_client().get_run(run_id).data.tags
    assert tags[f"promotion.{name}.decision"] == expected and tags[f"promotion.{name}.version"] == "2"


@pytest.mark.parametrize("method", ["lora", "none"])
def test_scratch_with_frozen_weights_is_refused_at_load_time(method):
    # at load, so a matrix or profile that asks for it stops before any run trains
    run = {"task": "classification", "family": "gpt", "method": method, "init": "scratch"}
    with pytest.raises(PipelineError, match=r"runs\.bad.*init: scratch trains a freshly initialised model") as caught:
        build_config(finetune.FinetuneConfig, {"runs": {"bad": run}})
    assert "\n" not in str(caught.value) and f"method {method} would leave" in str(caught.value)
