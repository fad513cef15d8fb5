"""Streaming parquet reads: every row once, in order, in batches no larger than asked, one row
group at a time (the bound on memory; bench/ingest_scale.py measures it)."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.parquet import iter_record_batches


@pytest.mark.parametrize("seed", range(5))
def test_every_row_comes_back_once_in_order_in_bounded_batches(tmp_path, seed):
    rng = random.Random(seed)
    rows, group, batch = rng.randint(0, 500), rng.randint(1, 120), rng.randint(1, 70)
    table = pa.table({"text": [f"doc {i} " * rng.randint(1, 5) for i in range(rows)], "n": list(range(rows))})
    path = tmp_path / "split.parquet"
    pq.write_table(table, path, row_group_size=group)
    parquet = pq.ParquetFile(path)
    batches = list(iter_record_batches(parquet, ["text"], batch))
    assert all(0 < b.num_rows <= batch for b in batches)
    assert all(b.schema.names == ["text"] for b in batches)
    assert [t for b in batches for t in b.column("text").to_pylist()] == table.column("text").to_pylist()
    # no batch spans two row groups: each group's rows end a batch
    ends, seen = set(), 0
    for b in batches:
        seen += b.num_rows
        ends.add(seen)
    assert {min(group * (k + 1), rows) for k in range(parquet.num_row_groups)} <= ends
