import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipeline.config import build_config
from llm_pipeline.data.records import Document, doc_id
from llm_pipeline.data.tasks.base import TaskData, string_schema, task_card, write_task
from llm_pipeline.data.tasks.build import TasksConfig
from llm_pipeline.data.tasks.leakage import build_train_index, count_overlap
from llm_pipeline.data.tasks.nsp import SCHEMA as NSP_SCHEMA
from llm_pipeline.errors import PipelineError


def _task(val, test, group_kind="debian_source"):
    return TaskData(
        "t",
        "src",
        string_schema("input", "target", "group"),
        {"train": [], "val": val, "test": test},
        group_kind=group_kind,
        input_column="input",
    )


def test_overlap_counts_texts_paragraphs_and_groups_in_train():
    train = [
        Document("debian", "pkg1", "First paragraph.\n\nSecond paragraph."),
        Document("bible_web", "Genesis 1", "In the beginning."),
    ]
    index = build_train_index(train, {"pkg1": "src1", "pkg2": "src2"}, "debian")
    clean = _task([{"input": "new text", "target": "t", "group": "src2"}], [])
    assert count_overlap(clean, index) == {"val": {"text": 0, "group": 0}, "test": {"text": 0, "group": 0}}
    leaky = _task(
        [{"input": "Second paragraph.", "target": "t", "group": "src2"}],
        [{"input": "In the beginning.", "target": "t", "group": "src1"}],
    )
    assert count_overlap(leaky, index) == {"val": {"text": 1, "group": 0}, "test": {"text": 1, "group": 1}}
    by_doc = _task(
        [{"input": "x", "target": "t", "group": doc_id("bible_web", "In the beginning.")}], [], group_kind="doc_id"
    )
    assert count_overlap(by_doc, index)["val"] == {"text": 0, "group": 1}
    assert count_overlap(_task([], [], group_kind="lemma"), index)["val"] == {"text": 0}


def test_task_card_and_write_task(tmp_path):
    rows = {
        "train": [
            {"text_a": "a" * 10, "text_b": "b" * 30, "is_next": 1, "group": "g"},
            {"text_a": "a" * 20, "text_b": "b", "is_next": 0, "group": "h"},
        ],
        "val": [],
        "test": [],
    }
    task = TaskData(
        "nsp", "corpus", NSP_SCHEMA, rows, group_kind="doc_id", input_column="text_a", label_column="is_next"
    )
    card = task_card(task)
    assert card["sizes"] == {"train": 2, "val": 0, "test": 0} and card["groups"]["train"] == 2
    assert card["label_distribution"]["train"] == {"1": 1, "0": 1}
    assert card["lengths_chars"]["text_a"]["train"] == {"mean": 15.0, "median": 15.0, "p95": 20.0}
    assert set(card["lengths_chars"]) == {"text_a", "text_b"}
    write_task(task, tmp_path / "nsp")
    table = pq.read_table(tmp_path / "nsp" / "train.parquet")
    assert table.schema.field("is_next").type == pa.int64() and table.column("is_next").to_pylist() == [1, 0]
    assert pq.read_table(tmp_path / "nsp" / "val.parquet").schema == NSP_SCHEMA


def test_tasks_config_rejects_clashing_local_names():
    local = {"kind": "seq2seq", "path": "x", "format": "jsonl"}
    with pytest.raises(PipelineError, match="built-in"):
        build_config(TasksConfig, {"local": [{"name": "qa", **local}]})
    with pytest.raises(PipelineError, match="unique"):
        build_config(TasksConfig, {"local": [{"name": "a", **local}, {"name": "a", **local}]})


def test_drop_policy_removes_overlapping_held_out_examples_and_reports_them():
    from llm_pipeline.data.sources.debian import DebianDescription
    from llm_pipeline.data.tasks.build import BuiltTasks, check_leakage

    train = [Document("debian", "pkg1", "Intro.\n\nThis package contains the documentation.")]
    descriptions = [DebianDescription("m1", "pkg1", "src1", "doc", "s", train[0].text)]
    rows = [
        {"input": "This package contains the documentation.", "target": "t", "group": "src2"},
        {"input": "Something new.", "target": "t", "group": "src2"},
    ]

    def built():
        return BuiltTasks({"t": _task(list(rows), list(rows))})

    kept = built()
    report = check_leakage(kept, train, descriptions, policy="drop")
    assert report["dropped"] == {"t": {"val": 1, "test": 1}} and report["total"] == 0
    assert kept.tasks["t"].splits["val"] == rows[1:]
    reported = check_leakage(built(), train, descriptions, policy="report")
    assert reported["total"] == 2 and reported["per_task"]["t"]["test"] == {"text": 1, "group": 0}
