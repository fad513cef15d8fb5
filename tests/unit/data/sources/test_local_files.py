import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.sources.local_files import expand_paths, read_local_files
from llm_pipeline.data.sources.readers import ReadOptions
from llm_pipeline.errors import PipelineError


def test_txt_is_one_document_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("alpha\nbeta")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"gamma"))
    docs = list(read_local_files(expand_paths(str(tmp_path / "*.txt*")), "txt", "local"))
    assert [d.text for d in docs] == ["alpha\nbeta", "gamma"]


def test_jsonl_reads_field_and_names_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "one"}\n\n{"body": "two"}\n{broken\n')
    docs = read_local_files([path], "jsonl", "local", ReadOptions(text_field="body"))
    assert [next(docs).text, next(docs).text] == ["one", "two"]
    with pytest.raises(PipelineError, match=r"d\.jsonl:4"):
        next(docs)


def test_parquet_null_cell_and_missing_column_name_the_place(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["x", None]}), path)
    with pytest.raises(PipelineError, match=r"d\.parquet:row2.*missing_field"):
        list(read_local_files([path], "parquet", "local", ReadOptions(text_field="content")))
    with pytest.raises(PipelineError, match=r"d\.parquet.*no column 'text'"):
        list(read_local_files([path], "parquet", "local"))


def test_glob_without_match_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match="no files match"):
        expand_paths(str(tmp_path / "*.jsonl"))
