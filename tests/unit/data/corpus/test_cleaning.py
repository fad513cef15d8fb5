from llm_pipeline.data.corpus.cleaning import clean_documents, normalize_text, strip_markup
from llm_pipeline.data.records import Document, doc_id


def test_normalize_nfc_controls_spaces():
    raw = "  Cafe\u0301\t is\x00 open\r\n\n\n\nnext   line \x1b\ufeff "
    assert normalize_text(raw) == "Caf\u00e9 is open\n\nnext line"


def test_markup_tags_and_entities_are_stripped_but_prose_brackets_survive():
    raw = (
        "<p>Fish &amp; chips<br/>are <b>great</b>&nbsp;here</p><script>x()</script>"
        "God<note n='a'>a footnote</note> <w lemma='x'>created</w>"
    )
    assert normalize_text(raw) == "Fish & chips\nare great here\nGod created"
    # not markup: a placeholder in prose, a comparison, an escaped tag meant to be shown
    assert (
        strip_markup("apt-get install <package> if a < b, see &lt;b&gt;")
        == "apt-get install <package> if a < b, see <b>"
    )
    assert normalize_text("<i>keep</i>", markup=False) == "<i>keep</i>"


def test_clean_drops_short_and_long_into_quarantine_with_detail():
    docs = [
        Document("a", "1", "hello   world, this is long enough"),
        Document("a", "3", "tiny"),
        Document("a", "4", "x" * 100),
    ]
    kept, dropped = clean_documents(docs, min_chars=10, max_chars=50)
    assert [(d.location, d.text) for d in kept] == [("1", "hello world, this is long enough")]
    assert [(q.location, q.reason) for q in dropped] == [("3", "too_short"), ("4", "too_long")]
    assert "100 chars" in dropped[1].detail


def test_doc_id_is_stable_and_depends_on_source():
    assert doc_id("a", "t") == doc_id("a", "t") != doc_id("b", "t")
    assert len(doc_id("a", "t")) == 40
