import itertools

import pyarrow.parquet as pq
import pytest

from llm_pipeline.data.corpus.build import SplitSpec, build_corpus
from llm_pipeline.data.corpus.dedup import NearDupOptions
from llm_pipeline.data.corpus.engine import LocalEngine
from llm_pipeline.data.records import Document
from llm_pipeline.data.sources.kinds import SourceData

SPEC = SplitSpec(0.2, 0.2, "seed")


def _source(name, texts):
    return SourceData(name, [Document(name, str(i), t) for i, t in enumerate(texts)], [])


def _texts(name, n):
    return [f"{name} document {i} " + " ".join(f"{name}{(i * 7 + k) % 97}x{i}" for k in range(12)) for i in range(n)]


def _where(corpus):
    return {(d.source, d.location): s for s, docs in corpus.views().items() for d in docs}


_work = itertools.count()


def _build(sources, tmp_path, **options):
    work = tmp_path / f"work{next(_work)}"
    work.mkdir()
    return build_corpus(
        sources, min_chars=10, max_chars=10_000, markup=True, split=SPEC, near=NearDupOptions(), work=work, **options
    )


def test_adding_a_source_moves_no_existing_document_between_splits(tmp_path):
    before = _where(_build([_source("a", _texts("a", 300))], tmp_path))
    after = _where(_build([_source("b", _texts("b", 300)), _source("a", _texts("a", 300))], tmp_path))
    assert set(before.values()) == {"train", "val", "test"}
    assert {k: after[k] for k in before} == before
    assert len(after) == 600


def test_a_copy_across_sources_keeps_the_eval_member_and_counts_per_source(tmp_path):
    a = _texts("a", 200)
    corpus = _build([_source("a", a), _source("b", a)], tmp_path)  # b repeats every text of a
    # each text survives once, in the split of whichever copy was not in train
    assert sum(len(list(d)) for d in corpus.views().values()) == 200
    assert corpus.eval_copies_in_train() == 0
    assert corpus.per_source["a"]["read"] == corpus.per_source["b"]["read"] == 200
    dropped = sum(corpus.per_source[s]["dropped"].get("duplicate", 0) for s in ("a", "b"))
    assert dropped == 200 and corpus.dedup.exact == 200
    assert corpus.dedup.train_dropped_for_eval > 0


def test_reader_quarantine_rows_flow_into_the_corpus_quarantine(tmp_path):
    src = _source("a", _texts("a", 20) + ["short"])
    corpus = _build([src], tmp_path)
    corpus.write_quarantine(tmp_path / "q.parquet")
    assert pq.read_table(tmp_path / "q.parquet").column("reason").to_pylist() == ["too_short"]
    assert corpus.per_source["a"] == {"read": 21, "sampled_out": 0, "kept": 20, "dropped": {"too_short": 1}}


def _write_all(corpus, folder):
    folder.mkdir()
    for split in ("train", "val", "test"):
        corpus.write_split(folder / f"{split}.parquet", split)
    corpus.write_quarantine(folder / "quarantine.parquet")
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _mixed_sources(rng_seed=0):
    import random

    rng = random.Random(rng_seed)
    a = _texts("a", 150)
    b = _texts("b", 120) + [rng.choice(a) for _ in range(15)] + ["tiny"] * 3
    b += [t + " extra" for t in rng.sample(a, 10)]  # near copies (Jaccard 10/11 on 5-word shingles)
    return [_source("a", a), _source("b", b), _source("c", _texts("c", 40))]


def test_outputs_are_byte_identical_for_every_worker_count(tmp_path):
    one = _write_all(_build(_mixed_sources(), tmp_path, chunk_chars=3000), tmp_path / "one")
    with LocalEngine(2) as engine:
        two = _write_all(_build(_mixed_sources(), tmp_path, chunk_chars=3000, engine=engine), tmp_path / "two")
    assert one == two
    # and the chunk size changes row groups only, not a single row
    big = _build(_mixed_sources(), tmp_path, chunk_chars=10**9)
    big_out = _write_all(big, tmp_path / "big")
    for name in one:
        assert pq.read_table(tmp_path / "big" / name).equals(pq.read_table(tmp_path / "one" / name))
    assert big_out.keys() == one.keys()


@pytest.mark.parametrize("chunk_chars", [500, 10**9])
def test_every_record_read_is_kept_or_quarantined_with_its_reason(tmp_path, chunk_chars):
    sources = _mixed_sources(1)
    read = {s.name: len(s.documents) for s in sources}
    corpus = _build(sources, tmp_path, chunk_chars=chunk_chars)
    _write_all(corpus, tmp_path / "out")
    kept = sum(pq.read_table(tmp_path / "out" / f"{s}.parquet").num_rows for s in ("val", "test"))
    kept += sum(1 for _ in corpus.documents("train"))
    quarantine = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert kept + len(quarantine) == sum(read.values())
    assert {q["reason"] for q in quarantine} == {"too_short", "duplicate", "near_duplicate"}
    for name, n in read.items():
        counts = corpus.per_source[name]
        assert counts["read"] == n == counts["kept"] + sum(counts["dropped"].values())
    assert all(q["detail"] for q in quarantine)


def test_train_is_written_in_rounds_of_the_mixing_weights(tmp_path):
    sources = _mixed_sources(2)
    weights = {"a": 2.0, "b": 0.5, "c": 0.0}
    corpus = _build(sources, tmp_path, chunk_chars=2000, weights=weights)
    corpus.write_split(tmp_path / "train.parquet", "train")
    written = pq.read_table(tmp_path / "train.parquet").to_pylist()
    # the reference: every train document once per round while it has copies left
    from llm_pipeline.data.corpus.mixing import copies

    train = list(corpus.documents("train"))
    n = [copies(d, weights[d.source], SPEC.seed) for d in train]
    want = [(d.source, d.text) for r in range(max(n)) for d, k in zip(train, n, strict=True) if k > r]
    assert [(w["source"], w["text"]) for w in written] == want
    assert {w["source"] for w in written} == {"a", "b"}  # weight 0 keeps c out of train
    assert corpus.mixing["a"]["train_effective"] == 2 * corpus.mixing["a"]["train_documents"]
    assert 0 < corpus.mixing["b"]["train_effective"] < corpus.mixing["b"]["train_documents"]
