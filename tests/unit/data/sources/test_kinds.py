"""Each kind of bad input: a PipelineError naming file and line/record (on_error: fail),
or a quarantine row with its reason (on_error: quarantine). Never a silent drop."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.sources.kinds import FileSourceConfig, load_files
from llm_pipeline.errors import PipelineError

GOOD = json.dumps({"text": "a good record"}).encode() + b"\n"


def _invalid_utf8(d):
    (d / "a.jsonl").write_bytes(GOOD + b'{"text": "caf\xe9"}\n')
    return "jsonl", "a.jsonl", r"a\.jsonl:2", "invalid_utf8"


def _invalid_utf8_txt_paragraph(d):
    (d / "a.txt").write_bytes(b"good paragraph\n\nline one\nbad \xff\xfe here\n")
    return "txt", "a.txt", r"a\.txt:4", "invalid_utf8"


def _malformed_jsonl(d):
    (d / "a.jsonl").write_bytes(GOOD + b'{"text": "unclosed\n')
    return "jsonl", "a.jsonl", r"a\.jsonl:2", "malformed_json"


def _missing_field(d):
    (d / "a.jsonl").write_bytes(GOOD + b'{"body": "no text key"}\n')
    return "jsonl", "a.jsonl", r"a\.jsonl:2", "missing_field"


def _empty_file(d):
    (d / "a.jsonl").write_bytes(GOOD)
    (d / "b.jsonl").write_bytes(b"")
    return "jsonl", "*.jsonl", r"b\.jsonl", "empty_file"


def _truncated_gz(d):
    data = gzip.compress(GOOD * 20000)
    (d / "a.jsonl.gz").write_bytes(data[: len(data) // 2])
    return "jsonl", "a.jsonl.gz", r"a\.jsonl\.gz.*after .*a\.jsonl\.gz:\d+", "corrupt_file"


def _parquet_wrong_schema(d):
    pq.write_table(pa.table({"text": [1, 2]}), d / "a.parquet")
    return "parquet", "a.parquet", r"a\.parquet.*'text' is int64", "wrong_schema"


def _csv_missing_column(d):
    (d / "a.csv").write_text("id,body\n1,hello\n")
    return "csv", "a.csv", r"a\.csv.*no column 'text'", "wrong_schema"


def _directory_without_matches(d):
    (d / "sub").mkdir()
    (d / "sub" / "notes.txt").write_text("not jsonl")
    return "jsonl", "sub", r"sub.*no jsonl files", "no_files"


CASES = [
    _invalid_utf8,
    _invalid_utf8_txt_paragraph,
    _malformed_jsonl,
    _missing_field,
    _empty_file,
    _truncated_gz,
    _parquet_wrong_schema,
    _csv_missing_column,
    _directory_without_matches,
]


def _load(kind, path, on_error):
    unit = "paragraph" if kind == "txt" else "file"
    data = load_files(FileSourceConfig(kind=kind, path=path, unit=unit), on_error, max_record_bytes=1000)
    return list(data.documents), data.dropped


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_fails_naming_the_place(tmp_path, make):
    kind, rel, where, reason = make(tmp_path)
    with pytest.raises(PipelineError, match=rf"{where}.*\[{reason}\]"):
        _load(kind, str(tmp_path / rel), "fail")


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_quarantined_with_its_reason(tmp_path, make):
    kind, rel, where, reason = make(tmp_path)
    docs, dropped = _load(kind, str(tmp_path / rel), "quarantine")
    assert [q.reason for q in dropped] == [reason]
    assert dropped[0].detail and dropped[0].source == f"{kind}:{tmp_path / rel}"
    if reason not in ("no_files", "wrong_schema"):  # whole-file problems hold no good rows
        assert docs, "the good records around a bad one are still read"


@pytest.mark.parametrize("on_error", ["fail", "quarantine"])
def test_a_50mb_line_is_quarantined_as_too_long_without_reading_it_whole(tmp_path, on_error):
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as fh:
        fh.write(GOOD)
        fh.write(b'{"text": "' + b"x" * 50_000_000 + b'"}\n')
        fh.write(GOOD)
    docs, dropped = _load("jsonl", str(path), on_error)
    assert [d.location for d in docs] == [f"{path}:1", f"{path}:3"]
    assert [(q.location, q.reason) for q in dropped] == [(f"{path}:2", "too_long")]
    assert len(dropped[0].text) <= 2000
