import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.ingest_config import SplitConfig
from llm_pipeline.data.tasks.base import split_by_hash
from llm_pipeline.data.tasks.local import LocalTaskConfig, build_local_task
from llm_pipeline.errors import PipelineError

SPLIT = SplitConfig(val_fraction=0.2, test_fraction=0.2, seed="s")


def test_local_seq2seq_jsonl_split_by_group_field(tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}", "topic": f"t{i % 7}"} for i in range(100)]
    rows.append({"q": "unanswered", "a": "", "topic": "t0"})
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = LocalTaskConfig(
        name="myqa",
        kind="seq2seq",
        path=str(tmp_path / "*.jsonl"),
        format="jsonl",
        input_field="q",
        target_field="a",
        group_field="topic",
    )
    task, files = build_local_task(cfg, SPLIT)
    assert files == [tmp_path / "qa.jsonl"]
    assert task.columns == ["input", "target", "group"]
    assert sum(len(r) for r in task.splits.values()) == 100 and task.notes["skipped_empty"] == 1
    assert {"input": "question 3", "target": "answer 3", "group": "t3"} in [
        r for rows in task.splits.values() for r in rows
    ]
    topics = [{r["group"] for r in task.splits[s]} for s in ("train", "val", "test")]
    assert not (topics[0] & topics[1]) and not (topics[0] & topics[2])


def test_local_classification_parquet_uses_classification_columns(tmp_path):
    pq.write_table(pa.table({"body": [f"text {i}" for i in range(30)], "tag": ["x", "y"] * 15}), tmp_path / "c.parquet")
    cfg = LocalTaskConfig(
        name="tags",
        kind="classification",
        path=str(tmp_path / "c.parquet"),
        format="parquet",
        input_field="body",
        target_field="tag",
    )
    task, _ = build_local_task(cfg, SPLIT)
    assert task.columns == ["text", "label", "group"] and task.label_column == "label"
    assert {r["label"] for rows in task.splits.values() for r in rows} == {"x", "y"}


def test_local_task_errors_name_the_file_and_record(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "target": "b"}\n{"input": "c"}\n')
    cfg = LocalTaskConfig(name="t", kind="seq2seq", path=str(tmp_path / "bad.jsonl"), format="jsonl")
    with pytest.raises(PipelineError, match=r"bad.jsonl:2"):
        build_local_task(cfg, SPLIT)
    with pytest.raises(PipelineError, match="no files match"):
        build_local_task(cfg.model_copy(update={"path": str(tmp_path / "none*.jsonl")}), SPLIT)
    with pytest.raises(ValueError):
        LocalTaskConfig(name="Bad Name!", kind="seq2seq", path="x", format="jsonl")


def split_task(tmp_path, rows: list[dict], **fields) -> LocalTaskConfig:
    (tmp_path / "fixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return LocalTaskConfig(
        name="fixed", kind="seq2seq", path=str(tmp_path / "fixed.jsonl"), format="jsonl", split_field="part", **fields
    )


def test_a_split_field_puts_each_record_in_its_own_split(tmp_path):
    parts = ["train", "TRAIN", "val", " validation ", "Dev", "test", "test", "train"]
    rows = [{"input": f"q{i}", "target": f"a{i}", "part": p} for i, p in enumerate(parts)]
    rows.append({"input": "", "target": "empty input", "part": "test"})  # skipped, as without a split_field
    task, _ = build_local_task(split_task(tmp_path, rows), SPLIT)
    assert {s: [r["input"] for r in task.splits[s]] for s in task.splits} == {
        "train": ["q0", "q1", "q7"],
        "val": ["q2", "q3", "q4"],
        "test": ["q5", "q6"],
    }
    assert task.columns == ["input", "target", "group"] and "split" not in task.splits["train"][0]
    assert task.notes == {"skipped_empty": 1, "split_from": "part"}
    capped, _ = build_local_task(split_task(tmp_path, rows, max_per_split=1), SPLIT)
    assert {s: len(r) for s, r in capped.splits.items()} == {"train": 1, "val": 1, "test": 1}


def test_a_bad_or_missing_split_value_is_one_line_naming_the_record(tmp_path):
    rows = [{"input": "a", "target": "b", "part": "train"}, {"input": "c", "target": "d", "part": "holdout"}]
    with pytest.raises(
        PipelineError, match=r"fixed\.jsonl:2: split_field 'part' is 'holdout'; expected train, val"
    ) as e:
        build_local_task(split_task(tmp_path, rows), SPLIT)
    assert "\n" not in str(e.value)
    rows[1].pop("part")
    with pytest.raises(PipelineError, match=r"fixed\.jsonl:2: no 'part' field.*split_field 'part'") as e:
        build_local_task(split_task(tmp_path, rows), SPLIT)
    assert "\n" not in str(e.value)


def test_without_a_split_field_the_hash_split_is_unchanged(tmp_path):
    rows = [{"input": f"q{i}", "target": f"a{i}", "part": "test"} for i in range(40)]
    by_field, _ = build_local_task(split_task(tmp_path, rows), SPLIT)
    by_hash, _ = build_local_task(split_task(tmp_path, rows).model_copy(update={"split_field": None}), SPLIT)
    assert len(by_field.splits["test"]) == 40
    assert by_hash.splits == split_by_hash(by_field.splits["test"], SPLIT)  # by the input text, as before
    assert all(by_hash.splits.values())
    assert "split_from" not in by_hash.notes
