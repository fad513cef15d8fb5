import pytest

from llm_pipeline.data.loaders.classification import TextClassificationDataset, collate_classification
from llm_pipeline.errors import PipelineError


def test_classification_collate_right_pads_and_truncates():
    ds = TextClassificationDataset([[5, 6, 7, 8, 9], [3]], [1, 0], max_len=4)
    input_ids, lengths, labels = collate_classification([ds[0], ds[1]], pad_id=99)
    assert input_ids.tolist() == [[5, 6, 7, 8], [3, 99, 99, 99]]
    assert lengths.tolist() == [4, 1] and labels.tolist() == [1, 0]


def test_classification_rejects_empty_text():
    with pytest.raises(PipelineError, match="row 1"):
        TextClassificationDataset([[1], []], [0, 1], max_len=4)
