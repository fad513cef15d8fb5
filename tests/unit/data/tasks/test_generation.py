"""Generation task: held-out documents cut into prompt -> continuation (data/tasks/generation.py)."""

from llm_pipeline.data.records import Document
from llm_pipeline.data.tasks.generation import GenerationTaskConfig, build_generation_task, cut_document


def test_generation_cuts_held_out_documents_only():
    text = "one two three\nfour five six seven eight"
    assert cut_document(text, 2, 3, 1) == ("one two", "three\nfour five")
    assert cut_document(text, 2, 100, 1) == ("one two", "three\nfour five six seven eight")
    assert cut_document(text, 8, 3, 1) is None
    corpus = {s: [Document("s", f"{s}{i}", f"{s} " + "word " * 60) for i in range(3)] for s in ("train", "val", "test")}
    task = build_generation_task(GenerationTaskConfig(prompt_words=10, continuation_words=5), corpus, "s")
    assert task.splits["train"] == []
    assert len(task.splits["val"]) == 3 and task.splits["test"][0]["prompt"].startswith("test ")
    assert len(task.splits["test"][0]["continuation"].split()) == 5
