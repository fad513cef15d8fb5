"""evaluate: every model on the test split, next to the baselines that give its number a meaning.

- pretraining: each pretrained family on its own objective's test metrics (GPT perplexity vs
  unigram/bigram; BERT NSP vs word overlap, MLM; T5 span corruption vs sentinels + most
  frequent token): evaluation/pretraining.py
- downstream: each run of the finetune matrix on its task's test split with the task's metric
  suite (params `tasks`) beside its baselines: evaluation/downstream.py
- a few sampled continuations of fixed prompts, to read

Writes reports/evaluate.json (through the stage runner): metric keys eval/<task>/<system>/<metric>,
plus the scores, verdicts and decoded examples the report stage renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import numpy as np
import torch
import yaml
from pydantic import AfterValidator, Field

from llm_pipeline.config import StageConfig
from llm_pipeline.data.loaders.config import PretrainDataConfig, TokenizedCorpus
from llm_pipeline.data.tokenization.shards import TokenShards
from llm_pipeline.data.tokenization.tokenizer import eot_id, load_tokenizer
from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.downstream import (
    FinetunedRun,
    GenerationConfig,
    add_pretraining_gains,
    load_run,
    score_classification,
    score_generation,
    score_seq2seq,
)
from llm_pipeline.evaluation.gate import Candidate, gate
from llm_pipeline.evaluation.harness import TextGenerator, generate_continuations
from llm_pipeline.evaluation.pretraining import first_batches, score_lm, score_mlm_nsp, score_span_corruption
from llm_pipeline.evaluation.promotion import Score, compute_test_set_digest
from llm_pipeline.evaluation.scoreboard import LOWER_IS_BETTER, Scoreboard
from llm_pipeline.evaluation.suites import DecodingConfig, TaskSuite
from llm_pipeline.families import FAMILIES, get_family
from llm_pipeline.io import read_manifest, read_run_record, sha256_file
from llm_pipeline.model_files import check_tokenizer, has_model, load_pretrained
from llm_pipeline.stages.base import StageResult
from llm_pipeline.tracking.registry import model_version_of_run
from llm_pipeline.tracking.runs import Tracker
from llm_pipeline.training.objectives import CausalLM, MaskedLMWithNSP, SpanCorruption


def _non_blank(prompt: str) -> str:
    if not prompt.strip():
        raise ValueError("empty or whitespace-only prompt; give the text to continue or remove the entry")
    return prompt


class SamplingConfig(StageConfig):
    """Sampled continuations of fixed prompts by the pretrained causal LM, to read beside the numbers."""

    prompts: list[Annotated[str, AfterValidator(_non_blank)]] = Field(
        default_factory=lambda: ["In the beginning", "This package provides"]
    )
    max_new_tokens: int = Field(40, gt=0)
    temperature: float = Field(0.8, ge=0)
    top_k: int | None = 50
    seed: int = 1234


class EvaluateConfig(StageConfig):
    tasks_dir: str = "data/ingest/tasks"
    tokenize_root: str = "data/tokenize"  # the pretrained families' test shards
    pretrain_root: str = "data/pretrain"
    finetune_root: str = "data/finetune"
    finetune_params: str = "params/finetune.yaml"  # the runs scored: its `runs` keys...
    runs: list[str] | None = None  # ...unless listed here
    families: list[str] = Field(default_factory=lambda: list(FAMILIES))  # pretrained families scored
    batch_size: int = Field(32, gt=0)
    max_test_tokens: int | None = Field(None, gt=0, description="cap on LM test tokens scored (CPU time)")
    max_test_batches: int | None = Field(None, gt=0, description="cap on BERT/T5 pretraining test batches")
    max_examples: int | None = Field(300, gt=0, description="test examples decoded per seq2seq/generation task")
    examples_per_task: int = Field(3, ge=0, description="decoded examples kept for the report, per run")
    seed: int = 0  # which test examples are decoded
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tasks: dict[str, TaskSuite] = Field(default_factory=dict)  # seq2seq metric suites; unlisted: the default
    samples: SamplingConfig = Field(default_factory=SamplingConfig)


def run_names(cfg: EvaluateConfig) -> list[str]:
    if cfg.runs is not None:
        return cfg.runs
    path = Path(cfg.finetune_params)
    if not path.is_file():
        raise PipelineError(f"{path}: finetune params not found; set finetune_params or list `runs`")
    return list((yaml.safe_load(path.read_text()) or {}).get("runs") or {})


def load_runs(cfg: EvaluateConfig) -> list[FinetunedRun]:
    runs = []
    for name in run_names(cfg):
        folder = Path(cfg.finetune_root) / name
        if not has_model(folder):
            raise PipelineError(f"{folder}: no fine-tuned model for run {name!r} (run `dvc repro finetune@{name}`)")
        runs.append(load_run(folder))
    return runs


def score_downstream(cfg: EvaluateConfig, board: Scoreboard, runs: list[FinetunedRun]) -> None:
    for run in runs:
        if run.kind == "classification":
            score_classification(board, run, cfg.tasks_dir, cfg.batch_size)
        elif run.kind == "seq2seq":
            suite = cfg.tasks.get(run.task, TaskSuite())
            score_seq2seq(
                board, run, cfg.tasks_dir, suite, cfg.decoding, cfg.max_examples, cfg.seed, cfg.examples_per_task
            )
        else:
            shards = pretrain_shards(cfg, run.family)
            train = np.asarray(TokenShards(shards.shards("train"), shards.manifest["dtype"]))
            check_tokenizer(shards.tokenizer_path, run.manifest["tokenizer_sha256"], f"the model {run.folder}")
            score_generation(
                board,
                run,
                cfg.tasks_dir,
                cfg.generation,
                train,
                shards.manifest["vocab_size"],
                cfg.max_examples,
                cfg.batch_size,
            )


def pretrain_shards(
    cfg: EvaluateConfig, family: str, held_out: str = "test", folder: Path | None = None
) -> TokenizedCorpus:
    """The token shards a family pretrained on (named in its pretrain manifest; folder: another
    saved model of the family than <pretrain_root>/<family>, e.g. a champion to rescore)."""
    manifest = read_manifest(folder or Path(cfg.pretrain_root) / family)
    folder = Path(cfg.tokenize_root) / manifest["tokenizer"]
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    return TokenizedCorpus(folder, read_manifest(folder), tokenizer, Path(cfg.tasks_dir), held_out=held_out)


def score_pretrained(cfg: EvaluateConfig, board: Scoreboard, family: str, folder: Path | None = None):
    """One pretrained family on the test split of its own objective; returns the model.
    folder: the saved model to score, default <pretrain_root>/<family>."""
    spec = get_family(family)
    folder = folder or Path(cfg.pretrain_root) / family
    model, meta = load_pretrained(folder, family=family)
    manifest = read_manifest(folder)
    corpus = pretrain_shards(cfg, family, folder=folder)
    check_tokenizer(corpus.tokenizer_path, meta["tokenizer_sha256"], f"the model {folder}")
    dtype = corpus.manifest["dtype"]
    train = np.asarray(TokenShards(corpus.shards("train"), dtype))  # one file: a memmap view, no copy
    objective = spec.objective()
    if isinstance(objective, CausalLM):
        test = load_test_tokens(corpus.shards("test"), dtype, model.config.max_seq_len, cfg.max_test_tokens)
        score_lm(board, family, model, test, train, corpus.manifest["vocab_size"], cfg.batch_size)
        return model
    data = PretrainDataConfig(**manifest.get("data", {})).model_copy(update={"batch_size": cfg.batch_size})
    seq_len = int(manifest["counts"]["seq_len"])
    _, test_loader = spec.build_loaders(corpus, data, seq_len)
    batches = first_batches(test_loader, cfg.max_test_batches)
    if isinstance(objective, MaskedLMWithNSP):
        score_mlm_nsp(board, family, model, objective, batches, cfg.tasks_dir)
    elif isinstance(objective, SpanCorruption):
        tokens = corpus.tokenizer.get_vocab()
        specials = tuple(tokens[t] for t in corpus.manifest.get("special_tokens", {}).values() if t in tokens)
        names = (f"<extra_id_{i}>" for i in range(corpus.manifest.get("extra_ids", 0)))
        sentinels = tuple(tokens[t] for t in names if t in tokens)
        score_span_corruption(board, family, model, objective, batches, train, sentinels, specials)
    return model


def load_test_tokens(paths: list[Path], dtype: str, block: int, cap: int | None) -> np.ndarray:
    """The test tokens to score (capped); at least one window of the model."""
    shards = TokenShards(paths, dtype)
    path = paths[0] if len(paths) == 1 else paths[0].parent
    whole = len(shards)
    test = shards[: cap or whole]
    if len(test) < block + 1:
        if len(test) < whole:
            raise PipelineError(
                f"{path}: max_test_tokens={cap} keeps fewer tokens than one window of the model "
                f"({block + 1} = max_seq_len {block} + 1); set max_test_tokens to at least {block + 1} (or null)"
            )
        raise PipelineError(
            f"{path}: the test split has {whole} tokens, fewer than one window of the model "
            f"({block + 1} = max_seq_len {block} + 1); max_test_tokens cannot help, the test split is too small"
        )
    return test


def check_prompts(samples: SamplingConfig, tokenizer) -> None:
    for i, prompt in enumerate(samples.prompts):
        if not tokenizer.encode(prompt, add_special_tokens=False).ids:
            raise PipelineError(f"samples.prompts.{i}: {prompt!r} tokenizes to nothing; give text the tokenizer knows")


def run(cfg: EvaluateConfig, tracker: Tracker) -> StageResult:
    torch.manual_seed(cfg.seed)
    for family in cfg.families:
        get_family(family)
    # every input is loaded and checked before any scoring: a missing run fails in seconds
    runs = load_runs(cfg)
    # the families that continue text (registry task_kinds), for the sampled prompts
    causal_families = [f for f in cfg.families if "generation" in get_family(f).task_kinds]
    if causal_families:
        check_prompts(cfg.samples, pretrain_shards(cfg, causal_families[0]).tokenizer)
    board = Scoreboard()
    causal: list[tuple[str, Any]] = []
    for family in cfg.families:
        model = score_pretrained(cfg, board, family)
        if family in causal_families:
            causal.append((family, model))
    score_downstream(cfg, board, runs)
    add_pretraining_gains(board, runs)

    report: dict[str, Any] = board.to_report()
    if tracker.active:  # the gate compares registered versions: nothing to compare without MLflow
        candidates = [pretrained_candidate(cfg, board, f) for f in cfg.families]
        candidates += [downstream_candidate(cfg, board, r) for r in runs]
        report["promotion"] = gate([c for c in candidates if c is not None], tracker.run_id)
        tracker.set_tags(promotion_tags(report["promotion"]))
    if causal:
        family, model = causal[0]
        tokenizer = pretrain_shards(cfg, family).tokenizer
        s = cfg.samples
        report["generations"] = generate_continuations(
            cast(TextGenerator, model), tokenizer, s.prompts, s.max_new_tokens, s.temperature, s.top_k,
            eot_id(tokenizer), s.seed,
        )  # fmt: skip
    return StageResult(metrics=board.metrics(), report=report)


# --- The promotion gate's candidates: each scored model's registered version, its primary
# score, the test set it was computed on, and how to score a champion the same way


def primary_row(board: Scoreboard, section: str, family: str, task: str | None = None) -> tuple[str, str, float]:
    """(task, metric, value) of a model row on its task's primary metric."""
    for s in board.scores:
        primary = board.primary.get(s.task) == s.metric and (task is None or s.task == task)
        if primary and s.section == section and s.kind == "model" and s.system == family:
            return s.task, s.metric, s.value
    raise PipelineError(f"evaluate: no primary {section} score for {family} {task or ''}".rstrip())


def _score(metric: str, value: float, files: list[Path], selection: dict[str, Any]) -> Score:
    digest = compute_test_set_digest([sha256_file(f) for f in files], selection)
    return Score(metric, value, metric not in LOWER_IS_BETTER, digest)


def pretrained_candidate(cfg: EvaluateConfig, board: Scoreboard, family: str) -> Candidate | None:
    folder = Path(cfg.pretrain_root) / family
    registered = model_version_of_run(read_run_record(folder).get("mlflow_run_id"))
    if registered is None:  # trained with tracking off: no version to promote
        return None
    task, metric, value = primary_row(board, "pretraining", family)
    nsp = isinstance(get_family(family).objective(), MaskedLMWithNSP)  # BERT is scored on ingest's nsp pairs
    files = [Path(cfg.tasks_dir) / "nsp" / "test.parquet"] if nsp else pretrain_shards(cfg, family).shards("test")
    cap = {"max_test_tokens": cfg.max_test_tokens} if task == "lm" else {"max_test_batches": cfg.max_test_batches}
    selection = cap | {"batch_size": cfg.batch_size}  # batches are what the batch caps count

    def rescore(saved: Path) -> float:
        fresh = Scoreboard()
        score_pretrained(cfg, fresh, family, saved)
        return primary_row(fresh, "pretraining", family)[2]

    return Candidate(*registered, task, _score(metric, value, files, selection), rescore)


def downstream_candidate(cfg: EvaluateConfig, board: Scoreboard, run: FinetunedRun) -> Candidate | None:
    registered = model_version_of_run(read_run_record(run.folder).get("mlflow_run_id"))
    if registered is None:
        return None
    _, metric, value = primary_row(board, "downstream", run.system, run.task)
    selection: dict[str, Any] = {
        "classification": {},  # every test example
        "seq2seq": {"max_examples": cfg.max_examples, "seed": cfg.seed},
        "generation": {"max_examples": cfg.max_examples, "max_tokens": cfg.generation.max_continuation_tokens},
    }[run.kind]

    def rescore(saved: Path) -> float:
        champion = load_run(saved)
        # the task's baselines are already scored: a board holding them scores only the model
        fresh = Scoreboard(scores=[s for s in board.scores if s.task == run.task and s.kind == "baseline"])
        score_downstream(cfg, fresh, [champion])
        return primary_row(fresh, "downstream", champion.system, run.task)[2]

    files = [Path(cfg.tasks_dir) / run.task / "test.parquet"]
    return Candidate(*registered, run.task, _score(metric, value, files, selection), rescore)


def promotion_tags(outcomes: list[dict[str, Any]]) -> dict[str, str]:
    """The gate's outcome on the evaluate run: promotion.<registered model>.<field>."""
    fields = ("version", "metric", "score", "champion_score", "previous_champion", "test_set", "decision", "reason")
    return {f"promotion.{o['registered_model']}.{k}": str(o[k]) for o in outcomes for k in fields}
