import pytest

from llm_pipeline.data.ingest_config import SplitConfig
from llm_pipeline.data.tasks.qa import QAConfig, build_qa_from_dir, parse_data_line
from llm_pipeline.errors import PipelineError

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
NOUNS = HEADER + (
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived to exist  \n"
    "00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept; "
    '"a bad abstraction"  \n'
    "09213565 17 n 02 bank 0 Bank 1 001 @ 09238143 n 0000 | sloping land beside water; "
    '"they sat on the bank"  \n'
    "08420278 14 n 01 bank 1 001 @ 08419793 n 0000 | a financial institution  \n"
)
ADJS = HEADER + "00020103 00 s 02 outback(a) 0 remote 0 003 & 00019874 a 0000 | inaccessible; far  \n"


def test_parse_data_line_reads_hex_word_count_markers_and_definition():
    assert parse_data_line(HEADER) is None
    line = NOUNS.splitlines()[2]
    assert parse_data_line(line) == (["abstraction", "abstract entity"], "a general concept")
    assert parse_data_line(ADJS.splitlines()[1]) == (["outback", "remote"], "inaccessible; far")
    big = "00000001 03 n 0b " + " ".join(f"w{i} 0" for i in range(11)) + " 000 | eleven words"
    parsed = parse_data_line(big)
    assert parsed is not None and len(parsed[0]) == 11  # w_cnt is hexadecimal


@pytest.fixture
def wordnet(tmp_path):
    (tmp_path / "data.noun").write_text(NOUNS)
    (tmp_path / "data.adj").write_text(ADJS)
    return tmp_path


def test_qa_examples_keep_all_senses_of_a_lemma_in_one_split(wordnet):
    split = SplitConfig(val_fraction=0.3, test_fraction=0.3, seed="s")
    task = build_qa_from_dir(QAConfig(parts_of_speech=["noun", "adj"]), wordnet, split)
    rows = [r for rows in task.splits.values() for r in rows]
    assert {
        "input": "What does 'abstract entity' mean?",
        "target": "a general concept",
        "group": "abstract entity",
    } in rows
    assert task.notes["senses_read"] == len(rows) == 7  # "Bank" = "bank" for sense 1: one row
    where: dict[str, set[str]] = {}
    for name, split_rows in task.splits.items():
        for r in split_rows:
            where.setdefault(r["group"], set()).add(name)
    assert all(len(s) == 1 for s in where.values())
    assert len([r for r in rows if r["group"] == "bank"]) == 2


def test_qa_cap_and_errors(wordnet):
    split = SplitConfig(val_fraction=0.0, test_fraction=0.0, seed="s")
    task = build_qa_from_dir(QAConfig(parts_of_speech=["noun"], max_per_split=2), wordnet, split)
    assert len(task.splits["train"]) == 2
    with pytest.raises(PipelineError, match="data.verb"):
        build_qa_from_dir(QAConfig(parts_of_speech=["verb"]), wordnet, split)
    (wordnet / "data.adv").write_text("garbage line\n")
    with pytest.raises(PipelineError, match=r"data.adv:1"):
        build_qa_from_dir(QAConfig(parts_of_speech=["adv"]), wordnet, split)
