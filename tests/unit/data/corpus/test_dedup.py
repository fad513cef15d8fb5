import functools
import random

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH

from llm_pipeline.data.corpus import dedup
from llm_pipeline.data.corpus.dedup import DedupInput, NearDupOptions, find_duplicates, hash_bytes, shingles, signatures

BASE = (
    "the quick brown fox jumps over the lazy dog while the farmer sleeps under "
    "an old oak tree near the river bank on a warm summer afternoon in july"
)


def _dedup(texts, splits, opts=None, tmp_path=None, chunk=3):
    """find_duplicates over `texts` cut into chunks of `chunk` documents -> {seq: (reason, kept, J)}, stats."""
    opts = opts or NearDupOptions()
    seqs = np.arange(len(texts))

    def chunks():
        for start in range(0, len(texts), chunk):
            part = slice(start, start + chunk)
            yield DedupInput(
                seqs[part],
                np.array([s != "train" for s in splits[part]], dtype=bool),
                hash_bytes(texts[part]),
                functools.partial(signatures, texts[part], opts),
            )

    drops, stats = find_duplicates(chunks, len(texts), opts, tmp_path)
    return drops.by_seq, stats


def _reference(texts, splits, opts):
    """The rule in memory, as datasketch's own index applies it: visit val/test then train,
    drop exact copies of a kept text, then near copies among LSH candidates."""
    order = sorted(range(len(texts)), key=lambda i: splits[i] == "train")
    drops: dict[int, tuple] = {}
    first: dict[str, int] = {}
    for i in order:
        k = first.setdefault(texts[i], i)
        if k != i:
            drops[i] = ("duplicate", k, None)
    if not opts.enabled:
        return drops
    lsh = MinHashLSH(threshold=opts.threshold, num_perm=opts.num_perm, weights=dedup.LSH_WEIGHTS)
    kept: dict[int, LeanMinHash] = {}
    for i in order:
        s = shingles(texts[i], opts.shingle_size)
        if i in drops or not s:
            continue
        mh = LeanMinHash(MinHash.bulk([s], num_perm=opts.num_perm, seed=1)[0])
        best = max(((mh.jaccard(kept[k]), k) for k in lsh.query(mh)), default=(0.0, -1))
        if best[0] >= opts.threshold:
            drops[i] = ("near_duplicate", best[1], best[0])
        else:
            lsh.insert(i, mh)
            kept[i] = mh
    return drops


def _corpus(rng, n):
    """Texts with exact copies, near copies (a few words changed) and copies of those."""
    words = [f"w{i}" for i in range(300)]
    texts: list[str] = []
    for _ in range(n):
        r = rng.random()
        if texts and r < 0.15:
            texts.append(rng.choice(texts))
        elif texts and r < 0.45:
            base = rng.choice(texts).split()
            for _ in range(rng.randint(1, 4)):
                base[rng.randrange(len(base))] = rng.choice(words)
            texts.append(" ".join(base))
        elif r < 0.55:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(60, 90))))  # a long base
        elif r < 0.48:
            texts.append("!!! ???")  # no words: exact dedup only
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))))
    return texts


@pytest.mark.parametrize("seed", range(6))
def test_on_disk_dedup_decides_exactly_as_an_in_memory_index(tmp_path, seed):
    rng = random.Random(seed)
    texts = _corpus(rng, rng.randint(40, 160))
    splits = [rng.choice(["train", "train", "train", "val", "test"]) for _ in texts]
    opts = NearDupOptions(
        num_perm=rng.choice([32, 64, 128]), threshold=rng.choice([0.5, 0.7, 0.8]), shingle_size=rng.choice([1, 2, 3])
    )
    got, stats = _dedup(texts, splits, opts, tmp_path, chunk=rng.randint(1, 50))
    want = _reference(texts, splits, opts)
    assert got == want
    assert stats.exact == sum(r == "duplicate" for r, _, _ in want.values())
    assert stats.near == len(want) - stats.exact > 0
    eval_kept = sum(splits[i] == "train" and splits[k] != "train" for i, (_, k, _) in want.items())
    assert stats.train_dropped_for_eval == eval_kept
    assert list(tmp_path.rglob("*.bin")) == [] and list(tmp_path.rglob("*.u64")) == []  # scratch removed


def test_many_partitions_decide_as_one(tmp_path, monkeypatch):
    texts = _corpus(random.Random(7), 120)
    splits = ["train"] * 100 + ["val"] * 20
    one, _ = _dedup(texts, splits, tmp_path=tmp_path / "one")
    monkeypatch.setattr(dedup, "ROWS_PER_PARTITION", 40)
    many, _ = _dedup(texts, splits, tmp_path=tmp_path / "many")
    assert many == one and len(one) > 10


def test_shingles_are_lowercased_word_ngrams():
    assert shingles("A b, C d", 3) == {b"a b c", b"b c d"}
    assert shingles("Two words", 5) == {b"two words"}
    assert shingles("!!", 5) == set()


def test_exact_duplicate_in_train_goes_and_eval_copy_stays(tmp_path):
    drops, stats = _dedup([BASE, BASE, "something else entirely here"], ["train", "val", "train"], tmp_path=tmp_path)
    assert drops == {0: ("duplicate", 1, None)}
    assert (stats.exact, stats.near, stats.train_dropped_for_eval) == (1, 0, 1)


def test_near_duplicate_across_splits_keeps_the_test_member(tmp_path):
    near = BASE.replace("july", "june")  # 1 word of 28 changed
    texts = [BASE, "an unrelated text about parsing debian packages today", near]
    drops, stats = _dedup(texts, ["train", "train", "test"], tmp_path=tmp_path)
    assert list(drops) == [0] and drops[0][:2] == ("near_duplicate", 2)
    assert stats.near == 1 and stats.train_dropped_for_eval == 1


def test_within_one_split_the_first_in_source_order_wins(tmp_path):
    drops, _ = _dedup([BASE, BASE.replace("july", "june")], ["train", "train"], tmp_path=tmp_path)
    assert list(drops) == [1] and drops[1][1] == 0


def test_threshold_and_switch_are_respected(tmp_path):
    texts, splits = [BASE, BASE.replace("july", "june")], ["train"] * 2
    assert _dedup(texts, splits, NearDupOptions(enabled=False), tmp_path / "a")[0] == {}
    assert _dedup(texts, splits, NearDupOptions(threshold=0.99), tmp_path / "b")[0] == {}


def test_hash_bytes_keep_digests_ending_in_zero_bytes():
    # numpy's S20 hides trailing zero bytes from Python, so the digests must travel as raw bytes
    digests = hash_bytes([f"text {i}" for i in range(2000)])
    assert digests.dtype == np.dtype("S20") and len(digests.tobytes()) == 20 * 2000
