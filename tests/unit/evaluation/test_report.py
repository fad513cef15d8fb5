"""report: summary.md and PNG figures from an evaluate.json fixture and loss-curve TSVs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llm_pipeline.errors import PipelineError
from llm_pipeline.evaluation.report import cell, parse_evaluation, render_summary
from llm_pipeline.stages import report
from llm_pipeline.stages.base import execute
from llm_pipeline.summary import format_summary
from llm_pipeline.tracking.runs import NullTracker

NO_TRACKING = NullTracker()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def score(section, task, system, kind, metric, value):
    return {"section": section, "task": task, "system": system, "kind": kind, "metric": metric, "value": value}


def verdict(task, family, metric, value, weakest, strongest):
    (weak_name, weak), (strong_name, strong) = weakest, strongest
    better = (lambda a, b: a < b) if metric == "ppl" else (lambda a, b: a > b)
    return {
        "task": task,
        "family": family,
        "metric": metric,
        "value": value,
        "weakest": {"system": weak_name, "value": weak},
        "strongest": {"system": strong_name, "value": strong},
        "beats_weakest": better(value, weak),
        "beats_strongest": better(value, strong),
    }


def evaluation_fixture() -> dict:
    """What the evaluate stage writes: two downstream tasks (one user-named), pretraining, examples."""
    scores = [
        # summarization: t5 beats lead_1 but loses to lead_k; gpt loses to both
        *[score("downstream", "summarization", "t5", "model", m, v) for m, v in [("rouge1", 0.31), ("rougeL", 0.21)]],
        *[score("downstream", "summarization", "gpt", "model", m, v) for m, v in [("rouge1", 0.12), ("rougeL", 0.11)]],
        *[
            score("downstream", "summarization", "lead_1", "baseline", m, v)
            for m, v in [("rouge1", 0.2), ("rougeL", 0.15)]
        ],
        *[
            score("downstream", "summarization", "lead_k", "baseline", m, v)
            for m, v in [("rouge1", 0.33), ("rougeL", 0.25)]
        ],
        # a task a user added, with a name the code has never seen: bert beats its only baseline
        score("downstream", "package_tags", "bert", "model", "macro_f1", 0.64),
        score("downstream", "package_tags", "bert", "model", "accuracy", 0.71),
        score("downstream", "package_tags", "majority", "baseline", "macro_f1", 0.19),
        # pretraining: perplexity, lower is better
        score("pretraining", "generation", "gpt", "model", "ppl", 41.7),
        score("pretraining", "generation", "unigram", "baseline", "ppl", 312.4),
        score("pretraining", "nsp", "bert", "model", "accuracy", 0.58),
    ]
    verdicts = [
        verdict("summarization", "t5", "rougeL", 0.21, ("lead_1", 0.15), ("lead_k", 0.25)),
        verdict("summarization", "gpt", "rougeL", 0.11, ("lead_1", 0.15), ("lead_k", 0.25)),
        verdict("package_tags", "bert", "macro_f1", 0.64, ("majority", 0.19), ("majority", 0.19)),
        verdict("generation", "gpt", "ppl", 41.7, ("unigram", 312.4), ("unigram", 312.4)),
    ]
    long_input = "Debian package | description\nwith a second line. " + "word " * 100
    examples = {
        "summarization": [
            {"family": "t5", "input": long_input, "reference": "a short | summary", "prediction": "a summary"}
        ]
        * 5
        + [{"family": "gpt", "input": "another text", "reference": "ref", "prediction": "<pad> pred"}],
        "package_tags": [{"family": "bert", "input": ["pair", "of texts"], "reference": "net", "prediction": "net"}],
    }
    return {
        "stage": "evaluate",
        "mlflow_run_id": "0123abcd",
        "metrics": {f"eval/{s['task']}/{s['system']}/{s['metric']}": s["value"] for s in scores},
        "scores": scores,
        "primary": {"summarization": "rougeL", "package_tags": "macro_f1", "generation": "ppl", "nsp": "accuracy"},
        "higher_is_better": {"ppl": False},
        "verdicts": verdicts,
        "examples": examples,
        "generations": [{"prompt": "In the beginning", "continuation": " was | the\nword"}],
    }


def write_loss(path: Path, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{step}\t{loss}\n" for step, loss in enumerate(losses, start=1))
    path.write_text("step\ttrain_loss\n" + rows)


@pytest.fixture
def inputs(tmp_path):
    evaluate = tmp_path / "reports" / "evaluate.json"
    evaluate.parent.mkdir(parents=True)
    evaluate.write_text(json.dumps(evaluation_fixture()))
    plots = tmp_path / "reports" / "plots"
    for run, start in [("pretrain-gpt", 10.0), ("pretrain-t5", 8.0), ("finetune-summarization-t5", 3.0)]:
        write_loss(plots / f"{run}_loss.tsv", [start * math.exp(-i / 30) + 0.5 for i in range(120)])
    (plots / "pretrain-gpt_loss_val.tsv").write_text("step\tval_loss\n10\t4.0\n")  # not a training curve
    return tmp_path


def config(root: Path, **overrides) -> report.ReportConfig:
    reports = root / "reports"
    paths = {
        "evaluate_report": str(reports / "evaluate.json"),
        "plots_dir": str(reports / "plots"),
        "output": str(reports / "summary.md"),
        "figures_dir": str(reports / "figures"),
    }
    return report.ReportConfig(**{**paths, **overrides})


def table_row(markdown: str, *starts: str) -> str:
    """The one table line that starts with these cells."""
    prefix = "| " + " | ".join(starts) + " |"
    (row,) = [line for line in markdown.splitlines() if line.startswith(prefix)]
    return row


def test_each_model_sits_beside_its_baselines_with_a_plain_verdict(inputs):
    cfg = config(inputs)
    result = report.run(cfg, NO_TRACKING)
    md = Path(cfg.output).read_text()

    assert md.startswith("# Evaluation summary") and "`0123abcd`" in md
    downstream = md.split("## Downstream tasks")[1].split("## Pretraining")[0]
    t5 = table_row(downstream, "summarization", "**t5**", "rougeL", "0.210")
    assert "lead_1 = 0.150" in t5 and "lead_k = 0.250" in t5
    assert "beats lead_1 (0.150) but not lead_k (0.250)" in t5
    assert "rouge1 = 0.310" in t5  # the other metrics ride along
    gpt = table_row(downstream, "summarization", "**gpt**", "rougeL", "0.110")
    assert "**does not beat even its weakest baseline, lead_1 (0.150)**" in gpt
    bert = table_row(downstream, "package_tags", "**bert**", "macro_f1", "0.640")
    assert "majority = 0.190" in bert and "beats majority (0.190)" in bert
    assert downstream.count("| summarization |") == 2  # one row per model, baselines inside it

    pretraining = md.split("## Pretraining")[1].split("## Examples")[0]
    ppl = table_row(pretraining, "generation", "**gpt**", "ppl (lower is better)", "41.7")
    assert "unigram = 312.4" in ppl and "beats unigram (312.4)" in ppl
    assert "no baseline to compare with" in table_row(pretraining, "nsp", "**bert**")

    assert result.metrics["rows/downstream"] == 3 and result.metrics["rows/pretraining"] == 2
    assert result.metrics["verdicts/lose_to_weakest"] == 1 and result.metrics["loss_curves"] == 3
    assert result.artifacts == [Path(cfg.output), Path(cfg.figures_dir)]


def test_examples_and_generations_cannot_break_the_markdown(inputs):
    cfg = config(inputs, max_examples=2)
    report.run(cfg, NO_TRACKING)
    md = Path(cfg.output).read_text()
    examples = md.split("## Examples")[1].split("## Generations")[0]
    rows = [line for line in examples.splitlines() if line.startswith("| ") and "---" not in line]
    header_cells = 4
    for row in rows:  # every row has exactly the header's cells: no raw | or newline leaked in
        assert row.replace("\\|", "").count("|") == header_cells + 1
    t5_rows = [r for r in rows if r.startswith("| t5 |")]
    assert len(t5_rows) == 2  # max_examples per family ...
    assert any(r.startswith("| gpt |") for r in rows)  # ... so every family shows
    assert "Debian package \\| description<br>with a second line." in t5_rows[0]
    assert len(t5_rows[0].split(" | ")[1]) < 260 and "…" in t5_rows[0]  # input cut to ~200 chars
    assert "&lt;pad&gt; pred" in examples
    assert '["pair", "of texts"]' in examples  # a non-text input is shown as JSON
    generations = md.split("## Generations")[1].split("## Plots")[0]
    assert "| In the beginning | was \\| the<br>word |" in generations


def test_figures_are_pngs_linked_from_the_summary(inputs):
    cfg = config(inputs)
    result = report.run(cfg, NO_TRACKING)
    figures = Path(cfg.figures_dir)
    names = sorted(p.name for p in figures.iterdir())
    expected = ["scores_generation.png", "scores_nsp.png", "scores_package_tags.png", "scores_summarization.png"]
    assert names == sorted(["training_loss.png", *expected])
    for png in figures.iterdir():
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    md = Path(cfg.output).read_text()
    plots = md.split("## Plots")[1]
    for name in names:
        assert f"(figures/{name})" in plots
    assert result.metrics["figures"] == 5

    (figures / "scores_old_task.png").write_bytes(PNG_MAGIC)  # a figure of a task no longer evaluated
    report.run(cfg, NO_TRACKING)
    assert not (figures / "scores_old_task.png").exists()


def test_without_loss_curves_there_is_no_loss_plot(inputs):
    cfg = config(inputs, plots_dir=str(inputs / "nowhere"))
    report.run(cfg, NO_TRACKING)
    assert not (Path(cfg.figures_dir) / "training_loss.png").exists()
    assert "training_loss.png" not in Path(cfg.output).read_text()


def test_missing_or_invalid_evaluate_json_is_one_line_naming_the_file(inputs):
    missing = inputs / "reports" / "gone.json"
    with pytest.raises(PipelineError) as err:
        report.run(config(inputs, evaluate_report=str(missing)), NO_TRACKING)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    assert not (inputs / "reports" / "summary.md").exists()

    bad = inputs / "reports" / "evaluate.json"
    data = evaluation_fixture()
    data["scores"][3]["kind"] = "oracle"
    bad.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match=r"evaluate\.json: scores\[3\]\.kind: .*'oracle'") as err:
        report.run(config(inputs), NO_TRACKING)
    assert "\n" not in str(err.value)

    del data["scores"]
    with pytest.raises(PipelineError, match="scores: Field required"):
        parse_evaluation(data, "evaluate.json")
    bad.write_text("{not json")
    with pytest.raises(PipelineError, match="evaluate.json: not valid JSON at line 1"):
        report.run(config(inputs), NO_TRACKING)
    with pytest.raises(PipelineError, match="expected a JSON object at top level, got list"):
        parse_evaluation([], "evaluate.json")


def test_the_renderer_is_pure_and_cells_are_escaped():
    ev = parse_evaluation(evaluation_fixture(), "x.json")
    assert render_summary(ev) == render_summary(ev)
    assert "## Plots" not in render_summary(ev)  # no figures given, no section
    assert cell("a|b\r\nc\\d <e>") == "a\\|b<br>c\\\\d &lt;e&gt;"
    assert cell("x" * 300, 200).endswith("…") and len(cell("x" * 300, 200)) == 200


def test_make_run_summary_prints_the_score_tables():
    text = format_summary(evaluation_fixture())
    assert "beats lead_1 (0.150) but not lead_k (0.250)" in text and "## Pretraining" in text
    old = format_summary({"metrics": {"eval/lm/ppl": 12.5}})  # a report from before `scores`
    assert "eval/lm/ppl  12.5" in old


def test_the_stage_runs_through_the_runner_and_logs_its_outputs(inputs, tracking_dir, monkeypatch):
    monkeypatch.chdir(inputs)  # the runner writes reports/report.json relative to the working dir
    result = execute("report", report.ReportConfig())
    assert Path("reports/summary.md").is_file() and Path("reports/figures/training_loss.png").is_file()
    written = json.loads(Path("reports/report.json").read_text())
    assert written["stage"] == "report" and written["mlflow_run_id"]
    assert written["metrics"] == result.metrics

    from llm_pipeline.tracking.runs import search_runs

    (run,) = [r for r in search_runs() if r.info.run_name == "report"]
    import mlflow

    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"summary.md", "report.json", "training_loss.png"} <= logged


def test_the_verdict_names_each_rule_the_model_beats_and_each_it_does_not():
    from llm_pipeline.evaluation.scoreboard import Scoreboard

    board = Scoreboard(primary={"sections": "macro_f1", "lm": "ppl"})
    board.add("downstream", "sections", "bert", "model", {"macro_f1": 0.81})
    board.add("downstream", "sections", "gpt", "model", {"macro_f1": 0.95})
    board.add("downstream", "sections", "bert-scratch", "model", {"macro_f1": 0.01})
    board.add("downstream", "sections", "majority", "baseline", {"macro_f1": 0.033})
    board.add("downstream", "sections", "tfidf_logreg", "baseline", {"macro_f1": 0.896})
    board.add("pretraining", "lm", "gpt", "model", {"ppl": 150.0})  # lower is better
    board.add("pretraining", "lm", "unigram", "baseline", {"ppl": 1000.0})
    board.add("pretraining", "lm", "bigram", "baseline", {"ppl": 140.0})
    text = render_summary(parse_evaluation({"stage": "evaluate"} | board.to_report(), "e.json"))
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| ")}
    assert "beats majority (0.033); **not tfidf_logreg (0.896)**" in rows["sections", "**bert**"]
    assert "beats every baseline, the strongest being tfidf_logreg (0.896)" in rows["sections", "**gpt**"]
    assert (
        "**beats none of its baselines: majority (0.033), tfidf_logreg (0.896)**"
        in rows["sections", "**bert-scratch**"]
    )
    assert "beats unigram (1000.0); **not bigram (140.0)**" in rows["lm", "**gpt**"]


def test_the_report_states_where_each_of_its_models_crosses_on_the_saved_curve(inputs, tmp_path):
    from llm_pipeline.evaluation.compute_curve import Point, to_json

    def p(run, task, family, level, value, flops):
        return Point(level, run, task, family, "rougeL", value, True, flops / 2, flops / 2, {"lead_k": 0.25})

    points = [
        p("summarization-gpt", "summarization", "gpt", 1, 0.05, 1e12),
        p("summarization-gpt", "summarization", "gpt", 2, 0.15, 1e13),
        p("translation-t5", "translation", "t5", 1, 0.2, 1e12),  # not a model of this evaluation
    ]
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps(to_json(points, "abc1234, 2026-12-07", "x the defaults of abc1234")))
    report.run(config(inputs, quality_curve=str(curve)), NO_TRACKING)
    text = (inputs / "reports" / "summary.md").read_text()
    assert "## Where each model crosses its baselines" in text and "measured at abc1234, 2026-12-07" in text
    row = table_row(text, "summarization-gpt")
    assert "rougeL 0.150 at 1e+13 FLOPs" in row and "lead_k 0.250" in row and "cross near 1e+14 FLOPs (10x" in row
    assert "translation-t5" not in text
    report.run(config(inputs), NO_TRACKING)  # no curve configured: no such section
    assert "Where each model crosses" not in (inputs / "reports" / "summary.md").read_text()
