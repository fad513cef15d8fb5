import datasets
import pytest

from llm_pipeline.data.sources.hf_datasets import read_hf_dataset
from llm_pipeline.data.sources.kinds import HFDatasetSourceConfig, load_hf_dataset
from llm_pipeline.data.sources.readers import BadRecord
from llm_pipeline.errors import PipelineError


def _save(tmp_path):
    path = tmp_path / "ds"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"body": ["first text", None], "n": [1, 2]}),
            "test": datasets.Dataset.from_dict({"body": ["third text"], "n": [3]}),
        }
    ).save_to_disk(str(path))
    return str(path)


def test_saved_dataset_all_splits_or_one(tmp_path):
    path = _save(tmp_path)
    data = load_hf_dataset(
        HFDatasetSourceConfig(kind="hf_dataset", path=path, text_field="body"), "quarantine", max_record_bytes=1000
    )
    docs = list(data.documents)
    assert [(d.location, d.text) for d in docs] == [
        (f"{path}[test]:row1", "third text"),
        (f"{path}[train]:row1", "first text"),
    ]
    assert [(q.location, q.reason) for q in data.dropped] == [(f"{path}[train]:row2", "missing_field")]
    one = read_hf_dataset(path, "body", "test", "s", 1000)
    assert [d.text for d in one] == ["third text"]


def test_unknown_split_or_column_is_named(tmp_path):
    path = _save(tmp_path)
    with pytest.raises(PipelineError, match=r"no split 'validation' \(splits: test, train\)"):
        list(read_hf_dataset(path, "body", "validation", "s", 1000))
    bad = list(read_hf_dataset(path, "text", "test", "s", 1000))
    assert isinstance(bad[0], BadRecord)
    assert bad[0].reason == "wrong_schema" and "columns: body, n" in bad[0].detail


def test_a_hub_id_that_cannot_be_reached_names_the_id(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no network in tests
    with pytest.raises(PipelineError, match=r"hf_dataset 'someone/corpus'.*Hugging Face Hub"):
        list(read_hf_dataset("someone/corpus", "text", None, "s", 1000))
