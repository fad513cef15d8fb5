"""Read users' files record by record: txt (per file or per paragraph), JSONL, CSV, parquet.

Files may be .gz/.bz2/.zst compressed (see compression.py). Readers stream: a record larger
than `max_record_bytes` is skipped without being held in memory (a 50 MB line costs one
buffer). A record that cannot be read becomes a `BadRecord` (location + reason + detail);
the caller decides whether that fails the run or goes to quarantine (`on_error`). Callers
read users' files through local_files.read_local_files, not read_file directly.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Literal, cast

import pyarrow as pa
import pyarrow.parquet as pq

from llm_pipeline.data.parquet import iter_record_batches
from llm_pipeline.data.records import SAMPLE_CHARS, Document, QuarantineRow
from llm_pipeline.data.sources.compression import compression_of, open_binary, strip_compression
from llm_pipeline.errors import PipelineError

FileFormat = Literal["txt", "jsonl", "parquet", "csv"]
EXTENSIONS = {"txt": (".txt",), "jsonl": (".jsonl", ".ndjson"), "parquet": (".parquet",), "csv": (".csv",)}
_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


@dataclass(frozen=True)
class BadRecord:
    location: str  # "file.jsonl:12", "file.parquet:row3", or the file itself
    reason: str  # invalid_utf8, malformed_json, missing_field, empty_file, corrupt_file, ...
    detail: str  # what is wrong, for the error message
    text: str = ""  # the raw record (a sample of it), for the quarantine table


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"  # jsonl key / csv or parquet column
    unit: Literal["file", "paragraph"] = "file"  # txt: one document per file or per paragraph
    delimiter: str = ","  # csv
    max_record_bytes: int = 1_000_000  # bigger records: BadRecord "too_long"


Record = Document | BadRecord


def expand_location(path: str, fmt: FileFormat) -> list[Path]:
    """A file, a glob (`**` recurses) or a directory (recursed, files of `fmt` kept), sorted.

    A path that does not exist is a PipelineError; a glob or directory without files -> [].
    """
    if glob.has_magic(path):
        return sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file())
    root = Path(path)
    if root.is_file():
        return [root]
    if root.is_dir():
        return sorted(
            p for p in root.rglob("*") if p.is_file() and strip_compression(p).lower().endswith(EXTENSIONS[fmt])
        )
    raise PipelineError(f"{path}: no such file or directory")


def read_file(path: Path, fmt: FileFormat, source: str, opts: ReadOptions) -> Iterator[Record]:
    """Records of one file; a truncated/corrupt/unreadable file ends in a BadRecord."""
    reader = {
        "txt": _read_paragraphs if opts.unit == "paragraph" else _read_whole_txt,
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "parquet": _read_parquet,
    }[fmt]
    last = None
    if path.stat().st_size == 0:
        yield _empty(path)
        return
    try:
        for record in reader(path, source, opts):
            last = record.location
            yield record
    except (EOFError, OSError, zlib.error, pa.ArrowException, csv.Error) as exc:
        where = f"after record {last}" if last else "before the first record"
        yield BadRecord(str(path), "corrupt_file", f"cannot read on {where} (truncated or corrupt?): {exc}")


def _empty(path: Path) -> BadRecord:
    return BadRecord(str(path), "empty_file", "the file holds no records")


def _too_long(location: str, raw: bytes | str, limit: int) -> BadRecord:
    sample = raw[: SAMPLE_CHARS * 4]
    text = sample.decode("utf-8", "replace") if isinstance(sample, bytes) else sample
    return BadRecord(location, "too_long", f"record larger than max_record_bytes={limit}", text[:SAMPLE_CHARS])


def _decode(raw: bytes, path: Path, first_line: int | None) -> str | BadRecord:
    """Strict UTF-8; a bad byte is reported at its own line (first_line: the record's)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = (first_line or 1) + raw.count(b"\n", 0, exc.start)
        return BadRecord(
            f"{path}:{line}",
            "invalid_utf8",
            f"invalid UTF-8 byte(s) {raw[exc.start : exc.end]!r}",
            raw.decode("utf-8", "replace")[:SAMPLE_CHARS],
        )


def _read_whole_txt(path: Path, source: str, opts: ReadOptions) -> Iterator[Record]:
    with open_binary(path) as stream:
        data = stream.read(opts.max_record_bytes + 1)
    if not data:
        yield _empty(path)
    elif len(data) > opts.max_record_bytes:
        yield _too_long(str(path), data, opts.max_record_bytes)
    else:
        text = _decode(data, path, 1)
        yield text if isinstance(text, BadRecord) else Document(source, str(path), text)


def iter_lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line without its newline, too_long). A line over `limit` bytes is cut
    to its first `limit` bytes; the rest is read and discarded a buffer at a time."""
    lineno = 0
    while line := stream.readline(limit + 1):
        lineno += 1
        too_long = len(line) > limit and not line.endswith(b"\n")
        if too_long:
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass
        yield lineno, line[:limit].rstrip(b"\r\n"), too_long


def _read_paragraphs(path: Path, source: str, opts: ReadOptions) -> Iterator[Record]:
    """One document per run of non-blank lines; location is the paragraph's first line."""
    lines: list[bytes] = []
    start, size, too_long, records = 0, 0, False, 0

    def flush() -> Record:
        location, raw = f"{path}:{start}", b"\n".join(lines)
        if too_long:
            return _too_long(location, raw, opts.max_record_bytes)
        text = _decode(raw, path, start)
        return text if isinstance(text, BadRecord) else Document(source, location, text)

    with open_binary(path) as stream:
        for lineno, line, cut in iter_lines(stream, opts.max_record_bytes):
            if not cut and not line.strip():  # a cut line may go on past its blank start
                if lines:
                    records += 1
                    yield flush()
                lines, size, too_long = [], 0, False
                continue
            start = start if lines else lineno
            size += len(line) + 1
            too_long = too_long or cut or size - 1 > opts.max_record_bytes  # size - 1: bytes of the lines joined
            if not too_long or size <= SAMPLE_CHARS * 4:  # of a huge paragraph keep a sample
                lines.append(line)
    if lines:
        yield flush()
    elif not records:
        yield _empty(path)  # nothing but blank lines


def _read_jsonl(path: Path, source: str, opts: ReadOptions) -> Iterator[Record]:
    seen_any = False
    with open_binary(path) as stream:
        for lineno, line, too_long in iter_lines(stream, opts.max_record_bytes):
            location = f"{path}:{lineno}"
            if too_long:
                seen_any = True
                yield _too_long(location, line, opts.max_record_bytes)
                continue
            if not line.strip():
                continue  # blank lines separate nothing and hold nothing
            seen_any = True
            text = _decode(line, path, lineno)
            if isinstance(text, BadRecord):
                yield text
                continue
            try:
                row = json.loads(text)
            except (ValueError, RecursionError) as exc:  # json raises these too: a huge int, deep nesting
                why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                yield BadRecord(location, "malformed_json", f"not valid JSON ({why})", text[:SAMPLE_CHARS])
                continue
            yield field_record(
                row.get(opts.text_field) if isinstance(row, dict) else None, row, opts.text_field, source, location
            )
    if not seen_any:
        yield _empty(path)


def field_record(value: object, row: object, field: str, source: str, location: str) -> Record:
    """The text of `field` in a parsed row, or why there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON's "\ud800" escape: not a character UTF-8 can hold
            return BadRecord(
                location,
                "invalid_utf8",
                f"{field!r} holds a lone surrogate {value[exc.start]!r}",
                str(row)[:SAMPLE_CHARS],
            )
        return Document(source, location, value)
    if value is None:
        return BadRecord(location, "missing_field", f"no {field!r} field (or it is null)", str(row)[:SAMPLE_CHARS])
    return BadRecord(
        location, "bad_field_type", f"{field!r} is a {type(value).__name__}, expected a string", str(row)[:SAMPLE_CHARS]
    )


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_csv(path: Path, source: str, opts: ReadOptions) -> Iterator[Record]:
    # surrogateescape: a bad byte stays visible in its field (as a lone surrogate), so it is
    # reported on its own row instead of failing the whole decoding buffer
    with (
        open_binary(path) as raw,
        io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") as text,
        _csv_field_limit(opts.max_record_bytes),
    ):
        lines = _CsvLines(text, opts.delimiter)
        rows = csv.reader(lines, delimiter=opts.delimiter)
        header = next(rows, None)
        if header is None:
            yield _empty(path)
            return
        if opts.text_field not in header:
            yield BadRecord(str(path), "wrong_schema", f"no column {opts.text_field!r} (columns: {_names(header)})")
            return
        column, count = header.index(opts.text_field), 0
        while True:
            lines.record.clear()
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                count += 1
                if "field larger than field limit" in str(exc):
                    lines.skip_record()
                    yield _too_long(f"{path}:{lines.line_num}", "", opts.max_record_bytes)
                else:
                    yield BadRecord(f"{path}:{lines.line_num}", "malformed_csv", str(exc))
                continue
            count += 1
            yield _csv_record(row, column, path, lines.line_num, source, opts.text_field)
        if count == 0:
            yield _empty(path)


class _CsvLines:
    """The lines csv.reader parses, counted, keeping those of the record being parsed.

    After a field over the size limit, csv drops the rest of that line only, and would parse
    the next lines of a quoted field that spans lines as rows of their own; `skip_record`
    reads on to the record's real end instead (the default dialect: doubled quotes escape).
    """

    def __init__(self, text: Iterator[str], delimiter: str):
        self._text, self._delimiter = text, delimiter
        self.line_num = 0
        self.record: list[str] = []  # lines fed to csv since the record began

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.line_num += 1
        self.record.append(line)
        return line

    def skip_record(self) -> None:
        quoted = False
        for line in self.record:
            quoted = self._ends_quoted(line, quoted)
        while quoted and (line := next(self._text, "")):
            self.line_num += 1
            quoted = self._ends_quoted(line, quoted)

    def _ends_quoted(self, line: str, quoted: bool) -> bool:
        """Whether `line` ends inside a quoted field, given whether it starts inside one."""
        i, field_start = 0, not quoted
        while i < len(line):
            if quoted:
                j = line.find('"', i)
                if j < 0:
                    return True
                if line.startswith('"', j + 1):  # "" is a quote inside the field
                    i = j + 2
                else:
                    quoted, field_start, i = False, False, j + 1
            elif field_start and line[i] == '"':
                quoted, i = True, i + 1
            else:  # an unquoted field (or the rest after a closing quote) runs to the delimiter
                j = line.find(self._delimiter, i)
                if j < 0:
                    return False
                field_start, i = True, j + 1
        return quoted


def _csv_record(row: list[str], column: int, path: Path, line: int, source: str, field: str) -> Record:
    location = f"{path}:{line}"
    if column >= len(row):
        sample = _unescape(",".join(row))[:SAMPLE_CHARS]
        return BadRecord(location, "missing_field", f"row has {len(row)} fields, no {field!r}", sample)
    value = row[column]
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the byte was not UTF-8
        # cast: a BadRecord, since the re-encoded bytes hold the byte that was not UTF-8
        return cast(BadRecord, _decode(value.encode("utf-8", "surrogateescape"), path, line))
    return Document(source, location, value)


def _names(columns: list[str]) -> str:
    """Column names for a one-line message: quoted, so a newline in one shows as \\n."""
    return ", ".join(repr(_unescape(c)) for c in columns)


def _unescape(text: str) -> str:
    """A CSV text with its bad bytes (lone surrogates, see _read_csv) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_parquet(path: Path, source: str, opts: ReadOptions) -> Iterator[Record]:
    with _seekable(path) as fh:
        parquet = pq.ParquetFile(fh)
        schema = parquet.schema_arrow
        if opts.text_field not in schema.names:
            yield BadRecord(
                str(path), "wrong_schema", f"no column {opts.text_field!r} (columns: {_names(schema.names)})"
            )
            return
        if schema.names.count(opts.text_field) > 1:
            yield BadRecord(
                str(path), "wrong_schema", f"{schema.names.count(opts.text_field)} columns {opts.text_field!r}"
            )
            return
        kind = schema.field(opts.text_field).type
        if pa.types.is_dictionary(kind):  # a pandas categorical column: strings, each stored once
            kind = kind.value_type
        if kind not in _STRING_TYPES:
            yield BadRecord(str(path), "wrong_schema", f"column {opts.text_field!r} is {kind}, expected string")
            return
        if parquet.metadata.num_rows == 0:
            yield _empty(path)
            return
        row = 0
        for batch in iter_record_batches(parquet, [opts.text_field], 1024):
            # as bytes: a writer that skips the UTF-8 check can store any, and to_pylist would
            # raise on the batch; decoded here, a bad cell is reported on its own row
            column = batch.column(0)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            for raw in column.cast(pa.large_binary()).to_pylist():
                row += 1
                location = f"{path}:row{row}"
                value = _decode(raw, path, None) if raw is not None else None
                if isinstance(value, BadRecord):
                    yield replace(value, location=location)
                elif value is not None and len(value) > opts.max_record_bytes:
                    yield _too_long(location, value, opts.max_record_bytes)
                else:
                    yield field_record(value, {opts.text_field: value}, opts.text_field, source, location)


@contextlib.contextmanager
def _seekable(path: Path) -> Iterator[BinaryIO]:
    """Parquet needs random access: a compressed one is decompressed to a temporary file."""
    if compression_of(path) is None:
        with open(path, "rb") as fh:
            yield fh
        return
    with tempfile.TemporaryFile() as tmp, open_binary(path) as stream:
        shutil.copyfileobj(stream, tmp, 1 << 20)
        tmp.seek(0)
        yield tmp


def accept_records(
    records: Iterator[Record], source: str, on_error: Literal["fail", "quarantine"], dropped: list[QuarantineRow] | None
) -> Iterator[Document]:
    """Documents pass; a BadRecord raises (on_error: fail) or is appended to `dropped`.

    "too_long" is a length filter, not an error: it goes to `dropped` under either policy,
    like cleaning's max_chars. With dropped=None every BadRecord raises.
    """
    for record in records:
        if isinstance(record, Document):
            yield record
        elif dropped is None or (on_error == "fail" and record.reason != "too_long"):
            raise PipelineError(
                f"{record.location}: {record.detail} [{record.reason}] in source "
                f"{source!r} (on_error: quarantine skips such records)"
            )
        else:
            dropped.append(QuarantineRow(source, record.location, record.reason, record.text, record.detail))
