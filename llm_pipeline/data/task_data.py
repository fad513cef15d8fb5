"""Read a downstream task's split written by ingest and turn it into model inputs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer

from llm_pipeline.data.text_classification import TextClassificationDataset
from llm_pipeline.errors import PipelineError


def load_task_split(tasks_dir: str | Path, task: str, split: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(tasks_dir) / task / f"{split}.parquet"
    if not path.is_file():
        raise PipelineError(f"{path}: task split not found (is the {task!r} task enabled in params/ingest.yaml?)")
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise PipelineError(f"{path}: no examples")
    return frame


def build_classification_dataset(tokenizer: Tokenizer, frame: pd.DataFrame, labels: list[str],
                                 max_len: int) -> tuple[TextClassificationDataset, int]:
    """Encode texts and map labels to ids. Returns the dataset and how many examples had a
    label the model does not know (absent from train); those are left out, and counted."""
    index = {label: i for i, label in enumerate(labels)}
    known = frame[frame["label"].isin(index)]
    encodings = tokenizer.encode_batch(known["text"].tolist(), add_special_tokens=False)
    dataset = TextClassificationDataset([e.ids for e in encodings],
                                        [index[label] for label in known["label"]], max_len)
    return dataset, len(frame) - len(known)
