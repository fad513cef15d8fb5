"""Fuzzed input for every source reader (txt per file and per paragraph, JSONL, CSV, parquet;
plain, .gz, .bz2, .zst), through the public entry `read_local_files` and the ingest registry.

Each generated file comes with an oracle written here, independent of the readers: how many
records went in (JSON lines, paragraphs, CSV rows, parquet rows) and which of them are good
(their text) or bad. Properties, under on_error quarantine: no exception but PipelineError;
records in = records kept + records quarantined (a file-level row such as corrupt_file or
wrong_schema stands for the rest of its file); kept texts are exactly the good ones, in order.
Under on_error fail: the same documents up to the first bad record, then a one-line
PipelineError starting with that record's file:line (or file:rowN).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llm_pipeline.data.records import QuarantineRow
from llm_pipeline.data.sources.kinds import FileSourceConfig, LoadContext, load_source
from llm_pipeline.data.sources.local_files import read_local_files
from llm_pipeline.data.sources.readers import FileFormat, ReadOptions
from llm_pipeline.errors import PipelineError

LIMIT = 64  # max_record_bytes: small, so that too-long records are common
FILE_LEVEL = {"empty_file", "corrupt_file", "wrong_schema", "no_files"}
# FUZZ_EXAMPLES=2000 for a longer hunt; the default keeps the file within seconds
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# ---------------------------------------------------------------- the oracle's view of a file


@dataclass
class Expected:
    """What a generated file holds, as counted by the generator."""

    records: int = 0  # records in
    good: list[str] = field(default_factory=list)  # texts of the good records, in order
    bad: int = 0  # bad records (quarantined under on_error: quarantine)
    lines: list[tuple[int, int]] = field(default_factory=list)  # bad records' (first, last) line


def is_text(value: Any) -> TypeGuard[str]:
    """A valid document text: a string that UTF-8 can hold (no lone surrogate)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decoded(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def split_lines(data: bytes) -> list[bytes]:
    """Lines as readline sees them, without the newline (a final newline ends no extra line)."""
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def jsonl_oracle(data: bytes, limit: int = LIMIT) -> Expected:
    out = Expected()
    for lineno, line in enumerate(split_lines(data), start=1):
        if len(line) <= limit and not line.strip():
            continue  # a blank line holds no record
        out.records += 1
        text, value = decoded(line) if len(line) <= limit else None, None
        if text is not None:
            try:
                row = json.loads(text)
                value = row.get("text") if isinstance(row, dict) else None
            except Exception:  # any failure to parse is a bad record, whatever json raises
                value = None
        if is_text(value):
            out.good.append(value)
        else:
            out.bad += 1
            out.lines.append((lineno, lineno))
    return out


def whole_txt_oracle(data: bytes) -> Expected:
    text = decoded(data)
    if not data:
        return Expected()
    if len(data) > LIMIT or text is None:
        return Expected(1, [], 1, [(1, data.count(b"\n") + 1)])
    return Expected(1, [text])


def paragraph_oracle(data: bytes) -> Expected:
    """A paragraph: a run of non-blank lines. A line over the limit is never blank (it is
    part of a too-long record); a record over the limit counts its joined bytes."""
    out = Expected()
    para: list[bytes] = []
    first = cut = 0

    def flush(last: int) -> None:
        raw = b"\n".join(para)
        out.records += 1
        text = decoded(raw)
        if cut or len(raw) > LIMIT or text is None:
            out.bad += 1
            out.lines.append((first, last))
        else:
            out.good.append(text)

    lines = split_lines(data)
    for lineno, line in enumerate(lines, start=1):
        if len(line) <= LIMIT and not line.strip():
            if para:
                flush(lineno - 1)
            para, cut = [], 0
            continue
        first = first if para else lineno
        cut = cut or len(line) > LIMIT
        para.append(line.rstrip(b"\r"))
    if para:
        flush(len(lines))
    return out


def csv_oracle(header: list[str], rows: list[list[str]], column: str, newline_counts: list[int]) -> Expected:
    out = Expected()
    index = header.index(column)
    line = newline_counts[0]  # lines ended so far
    for row, breaks in zip(rows, newline_counts[1:]):
        first, line = line + 1, line + breaks
        out.records += 1
        values = [v.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape") for v in row]
        text = decoded(row[index].encode("utf-8", "surrogateescape")) if index < len(row) else None
        if text is None or any(len(v) > LIMIT for v in values):
            out.bad += 1
            out.lines.append((first, line))
        else:
            out.good.append(text)
    return out


# ---------------------------------------------------------------- generators

COMPRESSIONS = ["", ".gz", ".bz2", ".zst"]


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data, mtime=0)
    if suffix == ".bz2":
        return bz2.compress(data)
    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


short_text = st.text(max_size=12)
long_text = st.text(min_size=LIMIT - 4, max_size=LIMIT + 8)
any_text = st.one_of(short_text, short_text, long_text)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
json_value = st.recursive(
    json_scalar,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@st.composite
def json_line(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["good", "good", "extra", "wrong_type", "missing", "not_object", "junk", "blank", "bad_byte", "raw"]
        )
    )
    if kind in ("good", "extra", "bad_byte"):
        row: dict[str, Any] = {"text": draw(any_text)}
        if kind == "extra":
            row.update(draw(st.dictionaries(st.text(max_size=5), json_value, max_size=3)))
        line = json.dumps(row, ensure_ascii=draw(st.booleans())).encode()
        if kind == "bad_byte":
            at = draw(st.integers(0, len(line)))
            line = line[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"])) + line[at:]
        return line
    if kind == "wrong_type":
        return json.dumps({"text": draw(json_value.filter(lambda v: not isinstance(v, str)))}).encode()
    if kind == "missing":
        return json.dumps(draw(st.dictionaries(st.text(max_size=5).filter(lambda k: k != "text"), json_value))).encode()
    if kind == "not_object":
        return json.dumps(draw(json_value.filter(lambda v: not isinstance(v, dict)))).encode()
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \x0b\x0c "]))
    if kind == "raw":  # JSON text that a JSON dumper would not write
        return draw(
            st.sampled_from(
                [
                    b'{"text": "\\ud800"}',  # a lone surrogate, escaped
                    b'{"text": "ok", "n": ' + b"1" * 5000 + b"}",  # an int over Python's digit limit
                    b"[" * 5000,  # nesting deeper than the recursion limit
                    b'{"text": NaN}',
                    b'{"text": "a"} {"text": "b"}',
                    b'{"text": "a"',
                ]
            )
        )
    return draw(st.binary(max_size=LIMIT + 8)).replace(b"\n", b"")


@st.composite
def jsonl_file(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(json_line(), max_size=8))
    sep = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = sep.join(lines) + draw(st.sampled_from([b"", sep]))
    return data


txt_line = st.one_of(
    st.text(max_size=20).map(lambda s: s.encode("utf-8")),
    st.binary(max_size=LIMIT + 8),
    st.sampled_from([b"", b"  ", b"\t", b" " * (LIMIT + 5) + b"tail"]),
)


@st.composite
def txt_file(draw: st.DrawFn) -> bytes:
    lines = [line.replace(b"\n", b"") for line in draw(st.lists(txt_line, max_size=10))]
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"]))


def _write(root: Path, name: str, data: bytes, suffix: str, cut: float | None) -> Path:
    path = root / f"{name}{suffix}"
    blob = compress(data, suffix)
    if suffix and cut is not None:
        blob = blob[: int(len(blob) * cut)]
    path.write_bytes(blob)
    return path


def _complete(path: Path, data: bytes, suffix: str) -> bool:
    """Whether the (maybe truncated) compressed file still holds all of `data`."""
    if not suffix:
        return True
    try:
        if suffix == ".gz":
            return gzip.decompress(path.read_bytes()) == data
        if suffix == ".bz2":
            return bz2.decompress(path.read_bytes()) == data
        reader = zstandard.ZstdDecompressor().decompressobj()
        return reader.decompress(path.read_bytes()) == data and reader.eof
    except Exception:
        return False


# ---------------------------------------------------------------- reading and the properties


@dataclass
class Outcome:
    docs: list[str]
    dropped: list[QuarantineRow]
    error: PipelineError | None
    docs_before_first_error: int  # docs yielded before a bad record that fails the run


def read(files: list[Path], fmt: FileFormat, opts: ReadOptions, on_error: str) -> Outcome:
    dropped: list[QuarantineRow] = []
    docs: list[str] = []
    before: int | None = None
    error = None
    try:
        for doc in read_local_files(files, fmt, "fuzz", opts, on_error, dropped):  # type: ignore[arg-type]
            if before is None and any(r.reason != "too_long" for r in dropped):
                before = len(docs)
            docs.append(doc.text)
    except PipelineError as exc:
        error = exc
    if before is None and any(r.reason != "too_long" for r in dropped):
        before = len(docs)
    return Outcome(docs, dropped, error, len(docs) if before is None else before)


def _line_of(location: str, path: Path) -> int | None:
    match = re.fullmatch(re.escape(str(path)) + r":(\d+)", location)
    return int(match.group(1)) if match else None


def check(path: Path, fmt: FileFormat, opts: ReadOptions, expected: Expected, complete: bool) -> None:
    """The properties, under quarantine and under fail, for one file."""
    kept = read([path], fmt, opts, "quarantine")
    assert kept.error is None, kept.error
    for row in kept.dropped:  # what is kept aside can be written out (quarantine.parquet)
        assert all(is_text(v) for v in row.as_dict().values()), row
    records = [r for r in kept.dropped if r.reason not in FILE_LEVEL]
    file_level = [r for r in kept.dropped if r.reason in FILE_LEVEL]
    for row in kept.dropped:
        assert row.location == str(path) or row.location.startswith(f"{path}:"), row
    if complete:
        assert kept.docs == expected.good
        assert len(kept.docs) + len(records) == expected.records
        assert [r.reason for r in file_level] == (["empty_file"] if expected.records == 0 else [])
        for row, (first, last) in zip(records, expected.lines):
            line = _line_of(row.location, path)
            assert line is None or first <= line <= last, (row, first, last)
    else:  # a truncated stream: what was read is a prefix, then one corrupt_file row
        assert kept.docs == expected.good[: len(kept.docs)]
        assert len(kept.docs) + len(records) <= expected.records
        # (a whole txt file over the limit is not read to its end, so its truncation goes unseen)
        too_long_file = fmt == "txt" and opts.unit == "file" and [r.reason for r in records] == ["too_long"]
        assert [r.reason for r in file_level] in (["corrupt_file"], ["empty_file"]) or too_long_file

    failed = read([path], fmt, opts, "fail")
    first_bad = next((r for r in kept.dropped if r.reason != "too_long"), None)
    if first_bad is None:
        assert failed.error is None, failed.error
        assert failed.docs == kept.docs
        return
    assert failed.error is not None
    message = str(failed.error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{first_bad.location}: "), (message, first_bad)
    assert failed.docs == kept.docs[: kept.docs_before_first_error]


compression = st.sampled_from(COMPRESSIONS)
truncation = st.one_of(st.none(), st.none(), st.floats(0.0, 0.99))


@FUZZ
@given(data=jsonl_file(), suffix=compression, cut=truncation, limit=st.sampled_from([LIMIT, LIMIT, 100_000]))
@example(data=b'{"text": "ok", "n": ' + b"1" * 5000 + b"}\n", suffix="", cut=None, limit=100_000)
@example(data=b"[" * 5000 + b"\n", suffix="", cut=None, limit=100_000)
@example(data=b'{"text": "\\ud800"}\n{"text": "after"}\n', suffix="", cut=None, limit=LIMIT)
@example(data=b'{"text": "a"}\n' * 40, suffix=".zst", cut=0.5, limit=LIMIT)
def test_jsonl(data: bytes, suffix: str, cut: float | None, limit: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "d.jsonl", data, suffix, cut)
        opts = ReadOptions(max_record_bytes=limit)
        check(path, "jsonl", opts, jsonl_oracle(data, limit), _complete(path, data, suffix))


@FUZZ
@given(data=txt_file(), suffix=compression, cut=truncation)
@example(data=b"first\n" + b" " * (LIMIT + 5) + b"tail\nlast\n", suffix="", cut=None)
@example(data=b"x" * LIMIT + b"\n", suffix="", cut=None)
def test_txt_paragraphs(data: bytes, suffix: str, cut: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "d.txt", data, suffix, cut)
        opts = ReadOptions(unit="paragraph", max_record_bytes=LIMIT)
        check(path, "txt", opts, paragraph_oracle(data), _complete(path, data, suffix))


@FUZZ
@given(data=txt_file() | st.binary(max_size=LIMIT + 8), suffix=compression, cut=truncation)
def test_txt_whole_file(data: bytes, suffix: str, cut: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "d.txt", data, suffix, cut)
        check(path, "txt", ReadOptions(max_record_bytes=LIMIT), whole_txt_oracle(data), _complete(path, data, suffix))


# CSV: fields with quotes, delimiters, newlines, bytes that are not UTF-8 (as surrogateescape)
csv_field = st.one_of(
    st.text(max_size=10),
    st.text(alphabet=st.sampled_from(list('"\r\n,;\t| ab')), max_size=12),
    st.binary(max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(min_size=LIMIT - 2, max_size=LIMIT + 6),
    st.builds(lambda a, b: f"{a}\n{b}", st.text(min_size=LIMIT, max_size=LIMIT + 4), st.text(max_size=4)),
)


@st.composite
def csv_file(draw: st.DrawFn) -> tuple[bytes, Expected, str]:
    delimiter = draw(st.sampled_from([",", ";", "\t", "|", " ", ":"]))
    others = draw(st.lists(st.text(alphabet="abcxyz_", min_size=1, max_size=4), max_size=3))
    header = others.copy()
    header.insert(draw(st.integers(0, len(others))), "text")
    rows = draw(st.lists(st.lists(csv_field, max_size=len(header) + 1), max_size=6))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter)
    breaks = []
    for row in [header, *rows]:
        start = buffer.tell()
        writer.writerow(row)
        breaks.append(len(re.findall(r"\r\n|\r|\n", buffer.getvalue()[start:])))
    data = buffer.getvalue().encode("utf-8", "surrogateescape")
    return data, csv_oracle(header, rows, "text", breaks), delimiter


@FUZZ
@given(generated=csv_file(), suffix=compression, cut=truncation)
@example(
    generated=(
        b'text,x\r\n"' + b"a" * (LIMIT + 2) + b'\nbbb",1\r\nok,2\r\n',
        Expected(2, ["ok"], 1, [(2, 3)]),
        ",",
    ),
    suffix="",
    cut=None,
)
@example(generated=(b"_,text\r\n\x80\r\n", Expected(1, [], 1, [(2, 2)]), ","), suffix="", cut=None)
def test_csv(generated: tuple[bytes, Expected, str], suffix: str, cut: float | None) -> None:
    data, expected, delimiter = generated
    if not expected.records:
        expected = Expected()  # a header and no rows: an empty file
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), "d.csv", data, suffix, cut)
        opts = ReadOptions(delimiter=delimiter, max_record_bytes=LIMIT)
        check(path, "csv", opts, expected, _complete(path, data, suffix))


parquet_column = st.sampled_from(
    ["string", "large_string", "dictionary", "not_utf8", "int64", "binary", "null", "absent", "twice"]
)
# a parquet string cell is UTF-8 by contract; a writer that does not check can store any bytes
parquet_bytes = st.one_of(
    st.none(), any_text.map(lambda s: s.encode("utf-8")), st.binary(max_size=8), st.just(b"ok\xff")
)


@st.composite
def parquet_table(draw: st.DrawFn) -> tuple[pa.Table, Expected, str]:
    kind = draw(parquet_column)
    if kind == "not_utf8":
        cells = draw(st.lists(parquet_bytes, max_size=8))
        values = [None if c is None else decoded(c) for c in cells]
        bad = sum(v is None or len(v) > LIMIT for v in values)
        text = pa.array(cells, pa.binary()).view(pa.string())  # no UTF-8 check
        table = pa.table({"text": text})
        good = [v for v in values if v is not None and len(v) <= LIMIT]
        return table, Expected(len(cells), good, bad, [(0, 0)] * bad), ""
    values = draw(st.lists(st.one_of(st.none(), any_text), max_size=8))
    columns: list[tuple[str, pa.Array]] = [("other", pa.array(range(len(values)), pa.int64()))]
    if kind in ("string", "large_string"):
        columns.append(("text", pa.array(values, getattr(pa, kind)())))
    elif kind == "dictionary":  # pandas writes a categorical column so
        columns.append(("text", pa.array(values, pa.string()).dictionary_encode()))
    elif kind == "binary":
        columns.append(("text", pa.array([v.encode() if v is not None else None for v in values], pa.binary())))
    elif kind in ("int64", "null"):
        columns.append(("text", pa.array([None] * len(values), getattr(pa, kind)())))
    elif kind == "twice":  # two columns of one name: which one is the text is ambiguous
        columns += [("text", pa.array(values, pa.string()))] * 2
    table = pa.Table.from_arrays([c for _, c in columns], names=[n for n, _ in columns])
    if kind in ("binary", "int64", "null", "absent", "twice"):
        return table, Expected(), "wrong_schema"
    good = [v for v in values if v is not None and len(v) <= LIMIT]
    bad = len(values) - len(good)
    return table, Expected(len(values), good, bad, [(0, 0)] * bad), ""


@FUZZ
@given(generated=parquet_table(), suffix=compression, cut=truncation)
@example(
    generated=(pa.table({"text": pa.array(["a", "b"]).dictionary_encode()}), Expected(2, ["a", "b"]), ""),
    suffix="",
    cut=None,
)
@example(
    generated=(pa.Table.from_arrays([pa.array(["a"])] * 2, names=["text", "text"]), Expected(), "wrong_schema"),
    suffix="",
    cut=None,
)
@example(
    generated=(
        pa.table({"text": pa.array([b"ok", b"\xff"], pa.binary()).view(pa.string())}),
        Expected(2, ["ok"], 1, [(0, 0)]),
        "",
    ),
    suffix="",
    cut=None,
)
@example(generated=(pa.table({"a\nb": [1]}), Expected(), "wrong_schema"), suffix="", cut=None)
def test_parquet(generated: tuple[pa.Table, Expected, str], suffix: str, cut: float | None) -> None:
    table, expected, problem = generated
    with tempfile.TemporaryDirectory() as tmp:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        path = _write(Path(tmp), "d.parquet", sink.getvalue(), suffix, cut)
        complete = _complete(path, sink.getvalue(), suffix)
        opts = ReadOptions(max_record_bytes=LIMIT)
        if problem and complete:
            kept = read([path], "parquet", opts, "quarantine")
            assert [r.reason for r in kept.dropped] == [problem] and not kept.docs
            failed = read([path], "parquet", opts, "fail")
            assert failed.error is not None and str(failed.error).startswith(f"{path}: ")
            assert "\n" not in str(failed.error)
            return
        check(path, "parquet", opts, expected if not problem else Expected(1, [], 1), complete)


@FUZZ
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["txt", "jsonl", "csv", "parquet"]), suffix=compression)
@example(data=b"not zstd at all", fmt="jsonl", suffix=".zst")
@example(data=b"PAR1 not really parquet PAR1", fmt="parquet", suffix="")
@example(data=b'"a\nb",\xff\r\nx,y\r\n', fmt="csv", suffix="")
def test_random_bytes_only_pipeline_error(data: bytes, fmt: FileFormat, suffix: str) -> None:
    """Arbitrary bytes under any name: documents, quarantine rows, or one PipelineError line."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d.{fmt}{suffix}"
        path.write_bytes(data)
        kept = read([path], fmt, ReadOptions(max_record_bytes=LIMIT), "quarantine")
        assert kept.error is None
        assert all(r.location == str(path) or r.location.startswith(f"{path}:") for r in kept.dropped)
        assert all(is_text(d) for d in kept.docs)
        for row in kept.dropped:
            assert all(is_text(v) for v in row.as_dict().values()) and "\n" not in row.detail, row
        failed = read([path], fmt, ReadOptions(max_record_bytes=LIMIT), "fail")
        if failed.error is not None:
            assert "\n" not in str(failed.error) and str(failed.error).startswith(str(path))


def _context(on_error: str) -> LoadContext:
    return LoadContext(None, "", False, on_error, LIMIT, "seed")  # type: ignore[arg-type]  # files: unused by file sources


@FUZZ
@given(files=st.lists(jsonl_file(), min_size=0, max_size=3), on_error=st.sampled_from(["fail", "quarantine"]))
def test_registry_directory_source(files: list[bytes], on_error: str) -> None:
    """A directory source through load_source: records in = kept + quarantined over all files."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, content in enumerate(files):
            (root / f"{i}.jsonl").write_bytes(content)
        src = FileSourceConfig(kind="jsonl", path=str(root), on_error=on_error)
        expected = [jsonl_oracle(content) for content in files]
        data = load_source(src, _context("fail"))
        docs: list[str] = []
        try:
            docs.extend(d.text for d in data.documents)
        except PipelineError as exc:
            error = str(exc)
        else:
            error = ""
        if error:
            assert on_error == "fail" and "\n" not in error and error.startswith(str(root)), error
            return
        records = [r for r in data.dropped if r.reason not in FILE_LEVEL]
        assert docs == [t for e in expected for t in e.good]
        assert len(docs) + len(records) == sum(e.records for e in expected)
        if on_error == "fail":
            assert all(r.reason == "too_long" for r in data.dropped)
