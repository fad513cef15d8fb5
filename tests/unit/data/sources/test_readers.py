import bz2
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from llm_pipeline.data.records import Document
from llm_pipeline.data.sources.readers import BadRecord, ReadOptions, expand_location, iter_lines, read_file

COMPRESSORS = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}


def _texts(records):
    return [r.text for r in records if isinstance(r, Document)]


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_jsonl_any_compression(tmp_path, suffix):
    path = tmp_path / f"d.jsonl{suffix}"
    path.write_bytes(COMPRESSORS[suffix](b'{"body": "one"}\n\n{"body": "two"}\n'))
    records = list(read_file(path, "jsonl", "s", ReadOptions(text_field="body")))
    assert _texts(records) == ["one", "two"]
    assert [r.location for r in records] == [f"{path}:1", f"{path}:3"]


def test_txt_per_file_and_per_paragraph(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first para\nstill first\n\n\n second para \n")
    assert _texts(read_file(path, "txt", "s", ReadOptions())) == ["first para\nstill first\n\n\n second para \n"]
    paras = list(read_file(path, "txt", "s", ReadOptions(unit="paragraph")))
    assert _texts(paras) == ["first para\nstill first", " second para "]
    assert [p.location for p in paras] == [f"{path}:1", f"{path}:5"]


def test_csv_text_field_quoted_newlines_and_delimiter(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b'id;body\n1;"multi\nline; text"\n2;plain\n'))
    records = list(read_file(path, "csv", "s", ReadOptions(text_field="body", delimiter=";")))
    assert _texts(records) == ["multi\nline; text", "plain"]
    assert records[1].location == f"{path}:4"


def test_parquet_plain_and_compressed(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["x", "y"], "n": [1, 2]}), path)
    assert _texts(read_file(path, "parquet", "s", ReadOptions(text_field="content"))) == ["x", "y"]
    zst = tmp_path / "b.parquet.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    assert _texts(read_file(zst, "parquet", "s", ReadOptions(text_field="content"))) == ["x", "y"]


def test_directory_recurses_and_keeps_matching_extensions(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jsonl", "sub/a.jsonl.gz", "sub/c.ndjson.zst", "notes.txt", "x.jsonl.bak"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in expand_location(str(tmp_path), "jsonl")] == [
        "b.jsonl",
        "sub/a.jsonl.gz",
        "sub/c.ndjson.zst",
    ]
    assert [p.name for p in expand_location(str(tmp_path / "**/*.gz"), "jsonl")] == ["a.jsonl.gz"]


def test_iter_lines_cuts_a_long_line_and_resumes_after_it(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"short\n" + b"x" * 100 + b"\nnext\nlast-no-newline")
    with open(path, "rb") as fh:
        lines = list(iter_lines(fh, limit=10))
    assert lines == [
        (1, b"short", False),
        (2, b"x" * 10, True),
        (3, b"next", False),
        (4, b"last-no-newline"[:10], True),
    ]


def test_read_file_reports_a_truncated_zstd(tmp_path):
    data = zstandard.ZstdCompressor().compress(
        b"".join(json.dumps({"text": f"row {i}"}).encode() + b"\n" for i in range(5000))
    )
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(data[: len(data) // 2])
    last = list(read_file(path, "jsonl", "s", ReadOptions()))[-1]
    assert isinstance(last, BadRecord) and last.reason == "corrupt_file" and "truncated" in last.detail


def test_a_file_of_blank_lines_is_an_empty_file_not_a_silent_nothing(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n  \n\n")
    for unit in ("file", "paragraph"):
        records = list(read_file(path, "txt", "s", ReadOptions(unit=unit)))
        assert [getattr(r, "reason", None) for r in records] == (["empty_file"] if unit == "paragraph" else [None])
