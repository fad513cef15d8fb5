from llm_pipeline.data.records import Document
from llm_pipeline.data.sources.debian import DebianDescription
from llm_pipeline.data.tasks.build import descriptions_by_split
from llm_pipeline.data.tasks.classification import (
    ClassificationConfig,
    Example,
    build_classification,
    build_classification_task,
)
from llm_pipeline.data.tasks.summarization import SummarizationConfig, build_summarization_task

SPLITS = ("train", "val", "test")


def test_classification_keeps_top_labels_and_long_texts_only():
    splits = {
        "train": [
            Example("libs text " * 5, "libs", "a"),
            Example("doc text " * 5, "doc", "b"),
            Example("short", "libs", "c"),
        ]
        * 3,
        "val": [Example("rare label text " * 5, "rare", "d")],
        "test": [Example("x " * 20, "doc", "e")],
    }
    out = build_classification(splits, top_n=2, min_chars=10, seed="s")
    assert {e.label for rows in out.values() for e in rows} == {"libs", "doc"}
    assert all(len(e.text) >= 10 for rows in out.values() for e in rows)
    assert out["val"] == [] and len(out["test"]) == 1


def test_classification_max_per_split_caps_each_split():
    examples = {s: [Example(f"{s} text {i} " * 5, "ab"[i % 2], f"g{i}") for i in range(100)] for s in SPLITS}
    out = build_classification(examples, top_n=2, min_chars=1, seed="s", max_per_split=30)
    assert [len(out[s]) for s in SPLITS] == [30, 30, 30]


def _description(i: int, text: str) -> DebianDescription:
    return DebianDescription(f"m{i}", f"pkg{i}", f"src{i // 2}", "libs" if i % 2 else "doc", f"synopsis  {i}", text)


def test_debian_tasks_take_each_description_from_its_corpus_split():
    # raw descriptions carry un-normalized text; the corpus has the cleaned text per split
    descriptions = [_description(i, f"raw   text {i} " * 4) for i in range(9)]
    corpus = {
        s: [Document("debian", f"pkg{i}", f"clean text {i} " * 4) for i in range(9) if i % 3 == k]
        for k, s in enumerate(SPLITS)
    }
    corpus["train"].append(Document("bible_web", "Genesis 1", "In the beginning " * 5))
    by_split = descriptions_by_split(corpus, descriptions[:-1])  # pkg8 never made it
    assert [d.package for d in by_split["val"]] == ["pkg1", "pkg4", "pkg7"]
    assert by_split["test"][0].long_description == "clean text 2 " * 4

    task = build_classification_task(ClassificationConfig(top_n_sections=2, min_chars=1), by_split, "s")
    assert task.splits["val"][0] == {"text": "clean text 1 " * 4, "label": "libs", "group": "src0"}
    summ = build_summarization_task(SummarizationConfig(min_input_chars=1), by_split, "s")
    assert summ.splits["train"][0] == {"input": "clean text 0 " * 4, "target": "synopsis 0", "group": "src0"}
    assert [len(summ.splits[s]) for s in SPLITS] == [3, 3, 2]
