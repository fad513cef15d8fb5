import random

import pytest

from llm_pipeline.data.records import Document
from llm_pipeline.data.tasks.nsp import Negatives, NSPConfig, build_nsp_task, build_pairs, segments


def test_segments_split_sentences_and_lines_and_merge_short_ones():
    text = 'He said, "Go." Then he left! Ok. Done at 3 p.m. today.\n\nA list item\nAnother line here'
    assert segments(text, 1) == [
        'He said, "Go."',
        "Then he left!",
        "Ok.",
        "Done at 3 p.m. today.",
        "A list item",
        "Another line here",
    ]
    assert segments(text, 15) == [
        'He said, "Go." Then he left!',
        "Ok. Done at 3 p.m. today.",
        "A list item Another line here",
    ]


def _docs(n, prefix):
    return [
        Document("s", f"{prefix}{i}", " ".join(f"{prefix} doc {i} sentence {k}." for k in range(6))) for i in range(n)
    ]


def test_nsp_pairs_are_half_next_half_from_another_document():
    docs = _docs(40, "Train")
    rows = build_pairs(docs, 5, None, "seed")
    assert rows == build_pairs(docs, 5, None, "seed")  # deterministic
    assert len(rows) == 40 * 5
    assert 0.4 < sum(r["is_next"] for r in rows) / len(rows) < 0.6
    for r in rows:
        doc_a, k = r["text_a"].split(" sentence ")
        doc_b = r["text_b"].split(" sentence ")[0]
        if r["is_next"]:
            assert r["text_b"] == f"{doc_a} sentence {int(k[:-1]) + 1}."
        else:
            assert doc_b != doc_a
    assert len(build_pairs(docs, 5, 17, "seed")) == 17


def test_nsp_builds_each_split_from_its_own_documents():
    corpus = {"train": _docs(10, "Train"), "val": _docs(5, "Val"), "test": _docs(5, "Test")}
    task = build_nsp_task(NSPConfig(min_segment_chars=5), corpus, "seed")
    for split, prefix in (("train", "Train"), ("val", "Val"), ("test", "Test")):
        assert task.splits[split]
        assert all(r["text_a"].startswith(prefix) and r["text_b"].startswith(prefix) for r in task.splits[split])


def test_nsp_negatives_come_from_the_same_source_when_it_has_other_documents():
    docs = [
        Document(src, f"{src}{i}", " ".join(f"{src} {i} sentence {k}." for k in range(4)))
        for src in ("Bible", "Debian")
        for i in range(10)
    ]
    rows = build_pairs(docs, 5, None, "seed", negatives="same_source")
    negatives = [r for r in rows if not r["is_next"]]
    assert negatives and all(r["text_a"].split()[0] == r["text_b"].split()[0] for r in negatives)
    task = build_nsp_task(NSPConfig(min_segment_chars=5, negatives="same_source"), {"train": docs}, "seed")
    assert task.splits["train"] == rows  # the param reaches the builder


def test_nsp_negatives_can_come_from_any_document_as_in_bert():
    docs = [
        Document(src, f"{src}{i}", " ".join(f"{src} {i} sentence {k}." for k in range(4)))
        for src, n in (("Bible", 10), ("Debian", 30))
        for i in range(n)
    ]
    rows = build_pairs(docs, 5, None, "seed")  # the default, as in BERT
    negatives = [r for r in rows if not r["is_next"]]
    crossed = [r for r in negatives if r["text_a"].split()[0] != r["text_b"].split()[0]]
    # a Bible A draws its B from 39 other documents, 30 of them Debian; a Debian A from 39, 10 Bible
    assert 0.2 * len(negatives) < len(crossed) < 0.7 * len(negatives)
    for r in negatives:  # never the pair's own document
        assert r["text_a"].split()[:2] != r["text_b"].split()[:2]
    corpus = {"train": docs}
    task = build_nsp_task(NSPConfig(min_segment_chars=5, negatives="any_document"), corpus, "seed")
    assert task.splits["train"] == rows


def _reference_pairs(docs, min_chars, max_pairs, seed, negatives):
    """The rule with every segment in memory: positions in hash order, the first max_pairs;
    heads B is the next segment, tails a segment of another document (of the same source
    for same_source when it has another)."""
    from llm_pipeline.data.records import doc_id, unit_interval

    segs = [segments(d.text, min_chars) for d in docs]
    ids = [doc_id(d.source, d.text) for d in docs]
    pools: dict[str, list[int]] = {}
    for i, s in enumerate(segs):
        if s:
            pools.setdefault(docs[i].source, []).append(i)
    everything = [i for pool in pools.values() for i in pool]
    if len(everything) < 2:
        return []
    u = lambda key: unit_interval(key, f"{seed}/nsp")
    positions = sorted(
        ((i, k) for i, s in enumerate(segs) for k in range(len(s) - 1)), key=lambda p: u(f"{ids[p[0]]}:{p[1]}")
    )
    rows = []
    for i, k in positions[:max_pairs]:
        key = f"{ids[i]}:{k}"
        if u(f"{key}/coin") < 0.5:
            b, is_next = segs[i][k + 1], 1
        else:
            own = pools[docs[i].source]
            others = own if negatives == "same_source" and len(own) > 1 else everything
            j = others[int(u(f"{key}/doc") * (len(others) - 1))]
            j = j if j != i else others[-1]
            b, is_next = segs[j][int(u(f"{key}/seg") * len(segs[j]))], 0
        rows.append({"text_a": segs[i][k], "text_b": b, "is_next": is_next, "group": ids[i]})
    return rows


@pytest.mark.parametrize("seed", range(8))
def test_streamed_pairs_are_the_pairs_of_the_rule_in_memory(seed):
    rng = random.Random(seed)
    sources = ["a", "b", "c"][: rng.randint(1, 3)]
    docs = [
        Document(
            rng.choice(sources),
            str(i),
            " ".join(f"Word{rng.randint(0, 50)} {'x' * rng.randint(0, 30)}." for _ in range(rng.randint(0, 8))),
        )
        for i in range(rng.randint(0, 60))
    ]
    min_chars, cap = rng.randint(1, 40), rng.choice([None, 1, 5, 40, 1000])
    negatives: Negatives = rng.choice(["same_source", "any_document"])
    got = build_pairs(docs, min_chars, cap, "s", negatives)
    assert got == _reference_pairs(docs, min_chars, cap, "s", negatives)
    reads = []

    class Counted:  # a view that restarts, as the corpus on disk is
        def __iter__(self):
            reads.append(1)
            return iter(docs)

    assert build_pairs(Counted(), min_chars, cap, "s", negatives) == got
    assert len(reads) <= 2  # two passes (the second only when there are pairs)
