from llm_pipeline.data.sources.bible import osis_to_text

# Shaped like engWEB2015eb's raw markup (Genesis 1:1 and John 3:16): notes glued between words.
GEN_1_1 = (
    '<w lemma="strong:H0430">In</w> <w lemma="x">the</w> <w lemma="x">beginning</w>, '
    '<w lemma="x">God</w><note placement="foot"><reference type="annotateRef">1:1 </reference>'
    'The Hebrew word rendered “God” is “אֱלֹהִ֑ים” (Elohim).</note><w lemma="x">created</w> '
    '<w>the</w> <w>heavens</w> <w>and</w> <w>the</w> <w>earth</w>. <div eID="gen25" type="x-p"/>'
)
JOHN = (
    '<q marker="" who="Jesus"><w>his</w> <w>only</w> born</q><note placement="foot">a note</note>'
    '<q marker="" who="Jesus"><w>Son</w>, <w>that</w> </q>'
)
PSALM = (
    '<title canonical="true" type="psalm">A Psalm by David.</title> <l level="1" sID="a"/>'
    'Yahweh, how <w>my</w> adversaries!<l eID="a"/><l sID="b"/>“<w>There</w> is no help ”'
    '<chapter eID="Ps.3"/><div type="glossary"/>Glossary text'
)


def test_note_between_words_leaves_a_space():
    assert osis_to_text(GEN_1_1) == "In the beginning, God created the heavens and the earth."
    assert osis_to_text(JOHN) == "his only born Son, that"


def test_titles_lines_quotes_and_after_chapter_end():
    assert osis_to_text(PSALM) == "Yahweh, how my adversaries! “There is no help”"
