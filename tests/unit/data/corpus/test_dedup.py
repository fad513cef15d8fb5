from llm_pipeline.data.corpus.dedup import NearDupOptions, remove_duplicates, shingles
from llm_pipeline.data.records import Document

BASE = (
    "the quick brown fox jumps over the lazy dog while the farmer sleeps under "
    "an old oak tree near the river bank on a warm summer afternoon in july"
)


def _doc(loc, text, source="s"):
    return Document(source, loc, text)


def test_shingles_are_lowercased_word_ngrams():
    assert shingles("A b, C d", 3) == {b"a b c", b"b c d"}
    assert shingles("Two words", 5) == {b"two words"}
    assert shingles("!!", 5) == set()


def test_exact_duplicate_in_train_goes_and_eval_copy_stays():
    docs = [_doc("t1", BASE), _doc("v1", BASE), _doc("t2", "something else entirely here")]
    keep, dropped, stats = remove_duplicates(docs, ["train", "val", "train"], NearDupOptions())
    assert keep == [1, 2]
    assert [(q.location, q.reason) for q in dropped] == [("t1", "duplicate")]
    assert "s:v1 (val)" in dropped[0].detail
    assert (stats.exact, stats.near, stats.train_dropped_for_eval) == (1, 0, 1)


def test_near_duplicate_across_splits_keeps_the_test_member():
    near = BASE.replace("july", "june")  # 1 word of 28 changed
    docs = [_doc("t1", BASE), _doc("x", "an unrelated text about parsing debian packages today"), _doc("test1", near)]
    keep, dropped, stats = remove_duplicates(docs, ["train", "train", "test"], NearDupOptions())
    assert keep == [1, 2]
    assert [(q.location, q.reason) for q in dropped] == [("t1", "near_duplicate")]
    assert stats.near == 1 and stats.train_dropped_for_eval == 1


def test_within_one_split_the_first_in_source_order_wins():
    docs = [_doc("a", BASE), _doc("b", BASE.replace("july", "june"))]
    keep, dropped, _ = remove_duplicates(docs, ["train", "train"], NearDupOptions())
    assert keep == [0] and dropped[0].location == "b"


def test_threshold_and_switch_are_respected():
    docs = [_doc("a", BASE), _doc("b", BASE.replace("july", "june"))]
    assert remove_duplicates(docs, ["train"] * 2, NearDupOptions(enabled=False))[0] == [0, 1]
    assert remove_duplicates(docs, ["train"] * 2, NearDupOptions(threshold=0.99))[0] == [0, 1]
