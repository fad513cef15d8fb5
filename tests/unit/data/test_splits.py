import pytest

from llm_pipeline.data.splits import assign_split
from llm_pipeline.data.tasks import Example, build_classification


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


def test_classification_keeps_groups_whole_and_top_labels_only():
    examples = [Example(f"text {g} {i} " * 5, label, f"src{g}")
                for g in range(300) for i, label in enumerate(["libs", "libs", "doc"])]
    examples += [Example("a rare label text " * 5, "rare", "srcX")]
    splits = build_classification(examples, top_n=2, min_chars=10, val_fraction=0.2,
                                  test_fraction=0.2, seed="s")
    where: dict[str, set[str]] = {}
    for name, rows in splits.items():
        for e in rows:
            where.setdefault(e.group, set()).add(name)
    assert all(len(s) == 1 for s in where.values())          # no group straddles splits
    assert {e.label for rows in splits.values() for e in rows} == {"libs", "doc"}
    assert all(splits[s] for s in ("train", "val", "test"))


def test_classification_max_per_split_caps_each_split():
    examples = [Example(f"text number {i} " * 5, "a" if i % 2 else "b", f"g{i}") for i in range(500)]
    splits = build_classification(examples, top_n=2, min_chars=1, val_fraction=0.3,
                                  test_fraction=0.3, seed="s", max_per_split=50)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [50, 50, 50]
