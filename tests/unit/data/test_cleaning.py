from llm_pipeline.data.cleaning import Document, clean_documents, doc_id, normalize_text


def test_normalize_nfc_controls_spaces():
    raw = "  Cafe\u0301\t is\x00 open\r\n\n\n\nnext   line \x1b "
    assert normalize_text(raw) == "Caf\u00e9 is open\n\nnext line"


def test_clean_drops_short_long_and_duplicates_into_quarantine():
    docs = [Document("a", "1", "hello   world, this is long enough"),
            Document("b", "2", "hello world, this is long enough"),   # duplicate after normalize
            Document("a", "3", "tiny"),
            Document("a", "4", "x" * 100)]
    kept, dropped = clean_documents(docs, min_chars=10, max_chars=50)
    assert [d.location for d in kept] == ["1"]
    assert kept[0].text == "hello world, this is long enough"
    assert {(q.source, q.location, q.reason) for q in dropped} == {
        ("b", "2", "duplicate"), ("a", "3", "too_short"), ("a", "4", "too_long")}


def test_dedup_across_calls_with_shared_seen_set():
    seen: set[str] = set()
    clean_documents([Document("a", "1", "same text here")], 1, 100, seen)
    kept, dropped = clean_documents([Document("b", "1", "same  text here")], 1, 100, seen)
    assert kept == [] and dropped[0].reason == "duplicate"


def test_doc_id_is_stable_and_depends_on_source():
    assert doc_id("a", "t") == doc_id("a", "t") != doc_id("b", "t")
    assert len(doc_id("a", "t")) == 40
