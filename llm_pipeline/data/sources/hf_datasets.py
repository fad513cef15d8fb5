"""A Hugging Face `datasets` dataset as documents: saved to disk, or by Hub id when online.

`datasets` is imported only here and only when such a source is listed (it costs seconds).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm_pipeline.data.records import SAMPLE_CHARS
from llm_pipeline.data.sources.readers import BadRecord, Record, field_record
from llm_pipeline.errors import PipelineError


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise PipelineError("kind: hf_dataset needs the `datasets` package: pip install datasets") from None
    return datasets


def load_dataset(path: str, split: str | None) -> dict[str, Any]:
    """{split name: Dataset}; a directory is read with load_from_disk, anything else is a Hub id."""
    datasets = _datasets()
    if Path(path).exists():
        try:
            loaded = datasets.load_from_disk(path)
        except Exception as exc:  # datasets raises FileNotFoundError/ValueError/... for non-datasets dirs
            raise PipelineError(f"{path}: not a dataset saved with save_to_disk ({exc})") from None
    else:
        try:
            loaded = datasets.load_dataset(path, split=split)
        except Exception as exc:  # offline: ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError...
            raise PipelineError(
                f"hf_dataset {path!r}: not a directory here, and loading it from the "
                f"Hugging Face Hub failed ({type(exc).__name__}: {exc})"
            ) from None
        return {split or "train": loaded}
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            return dict(sorted(loaded.items()))
        if split not in loaded:
            raise PipelineError(f"{path}: no split {split!r} (splits: {', '.join(sorted(loaded))})")
        return {split: loaded[split]}
    return {split or "train": loaded}


def read_hf_dataset(
    path: str, text_field: str, split: str | None, source: str, max_record_bytes: int
) -> Iterator[Record]:
    """Rows of each split in order; location "<path>[<split>]:row<N>" (1-based)."""
    for name, dataset in load_dataset(path, split).items():
        where = f"{path}[{name}]"
        if text_field not in dataset.column_names:
            yield BadRecord(
                where, "wrong_schema", f"no column {text_field!r} (columns: {', '.join(dataset.column_names)})"
            )
            continue
        row = 0
        for batch in dataset.select_columns([text_field]).iter(batch_size=1000):
            for value in batch[text_field]:
                row += 1
                location = f"{where}:row{row}"
                if isinstance(value, str) and len(value) > max_record_bytes:
                    yield BadRecord(
                        location,
                        "too_long",
                        f"record larger than max_record_bytes={max_record_bytes}",
                        value[:SAMPLE_CHARS],
                    )
                else:
                    yield field_record(value, {text_field: value}, text_field, source, location)
        if row == 0:
            yield BadRecord(where, "empty_file", "the dataset split holds no rows")
