from llm_pipeline.data.corpus.build import SplitSpec, build_corpus, eval_copies_in_train
from llm_pipeline.data.corpus.dedup import NearDupOptions
from llm_pipeline.data.records import Document
from llm_pipeline.data.sources.kinds import SourceData

SPEC = SplitSpec(0.2, 0.2, "seed")


def _source(name, texts):
    return SourceData(name, [Document(name, str(i), t) for i, t in enumerate(texts)], [])


def _texts(name, n):
    return [f"{name} document {i} " + " ".join(f"{name}{(i * 7 + k) % 97}x{i}" for k in range(12)) for i in range(n)]


def _where(corpus):
    return {(d.source, d.location): s for s, docs in corpus.splits.items() for d in docs}


def _build(sources):
    return build_corpus(sources, min_chars=10, max_chars=10_000, markup=True, split=SPEC, near=NearDupOptions())


def test_adding_a_source_moves_no_existing_document_between_splits():
    before = _where(_build([_source("a", _texts("a", 300))]))
    after = _where(_build([_source("b", _texts("b", 300)), _source("a", _texts("a", 300))]))
    assert set(before.values()) == {"train", "val", "test"}
    assert {k: after[k] for k in before} == before
    assert len(after) == 600


def test_a_copy_across_sources_keeps_the_eval_member_and_counts_per_source():
    a = _texts("a", 200)
    corpus = _build([_source("a", a), _source("b", a)])  # b repeats every text of a
    # each text survives once, in the split of whichever copy was not in train
    assert sum(len(d) for d in corpus.splits.values()) == 200
    assert eval_copies_in_train(corpus.splits) == 0
    assert corpus.per_source["a"]["read"] == corpus.per_source["b"]["read"] == 200
    dropped = sum(corpus.per_source[s]["dropped"].get("duplicate", 0) for s in ("a", "b"))
    assert dropped == 200 and corpus.dedup.exact == 200
    assert corpus.dedup.train_dropped_for_eval > 0


def test_reader_quarantine_rows_flow_into_the_corpus_quarantine():
    src = _source("a", _texts("a", 20) + ["short"])
    corpus = _build([src])
    assert [q.reason for q in corpus.quarantine] == ["too_short"]
    assert corpus.per_source["a"] == {"read": 21, "sampled_out": 0, "kept": 20, "dropped": {"too_short": 1}}
