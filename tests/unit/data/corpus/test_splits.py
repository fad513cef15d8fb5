import pytest

from llm_pipeline.data.corpus.splits import assign_split


def test_assign_split_is_deterministic_and_seeded():
    keys = [f"doc{i}" for i in range(2000)]
    a = [assign_split(k, 0.1, 0.1, "s") for k in keys]
    assert a == [assign_split(k, 0.1, 0.1, "s") for k in keys]
    assert a != [assign_split(k, 0.1, 0.1, "other") for k in keys]


def test_assign_split_fractions_approximately_hold():
    splits = [assign_split(str(i), 0.1, 0.2, "s") for i in range(20000)]
    assert splits.count("val") / 20000 == pytest.approx(0.1, abs=0.01)
    assert splits.count("test") / 20000 == pytest.approx(0.2, abs=0.01)


def test_assign_split_rejects_fractions_that_leave_no_train():
    with pytest.raises(ValueError):
        assign_split("k", 0.5, 0.5, "s")
