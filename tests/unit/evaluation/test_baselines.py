from __future__ import annotations

import math

import numpy as np
import pytest

from llm_pipeline.evaluation.baselines import (
    BigramLM,
    NearestQuestion,
    TfidfLogReg,
    WordOverlapNSP,
    copy_source,
    lead_sentences,
    lead_words,
    most_frequent_answer,
    most_frequent_token,
    span_corruption_baseline_accuracy,
    split_sentences,
    word_overlap,
)
from llm_pipeline.evaluation.metrics import compute_unigram_perplexity

# --------------------------------------------------------------------------- summarisation


def test_split_sentences():
    text = 'Hello world. This is it!  Next? yes\nNew line without stop\n\nPi is 3.14 here. He said "stop." Then left.'
    assert split_sentences(text) == [
        "Hello world.",
        "This is it!",
        "Next?",
        "yes",
        "New line without stop",
        "Pi is 3.14 here.",
        'He said "stop."',
        "Then left.",
    ]


def test_lead_sentences_and_words():
    text = "Hello world. This is it! Next one."
    assert lead_sentences(text) == "Hello world."
    assert lead_sentences(text, k=2) == "Hello world. This is it!"
    assert lead_sentences(text, k=10) == "Hello world. This is it! Next one."
    assert lead_sentences("  first line\nsecond line") == "first line"
    assert lead_sentences("") == ""
    assert lead_words("a  b\nc d", 3) == "a b c"
    assert lead_words("a b", 5) == "a b"
    assert copy_source(("x", "y")) == ["x", "y"]


# --------------------------------------------------------------------------- question answering


def test_most_frequent_answer_by_normalised_form():
    answers = ["The Beatles", "beatles", "Elvis", "the beatles!", "Elvis", "Elvis", "The Beatles"]
    assert most_frequent_answer(answers) == "The Beatles"  # 4 normalised "beatles" vs 3 "elvis"
    assert most_frequent_answer(["b", "a"]) == "b"  # tie: first seen
    with pytest.raises(ValueError):
        most_frequent_answer([])


def test_nearest_question_returns_the_right_neighbour():
    questions = ["Who wrote Hamlet?", "What is the capital of France?", "What is the capital of Italy?"]
    model = NearestQuestion().fit(questions, ["Shakespeare", "Paris", "Rome"])
    assert model.predict(["capital city of ITALY", "who WROTE hamlet", "zzz unknown"]) == [
        "Rome",
        "Shakespeare",
        "Shakespeare",  # no shared word: most frequent answer (all tied: the first)
    ]


def test_nearest_question_ties_go_to_the_first_train_question():
    model = NearestQuestion().fit(["same question", "same question"], ["first", "second"])
    assert model.predict(["same question"]) == ["first"]


def test_nearest_question_weighs_rare_words_by_idf():
    # By raw counts "what is the everest" is closest to "what is the river" (cosine 3/4 vs 1/(2*sqrt 2)).
    # With idf the shared words are nearly worthless and the rare "everest" decides.
    topics = ["river", "lake", "sea", "moon", "sun", "star", "tree", "rock", "cloud", "rain"]
    questions = [f"what is the {t}" for t in topics] + ["everest height"]
    model = NearestQuestion().fit(questions, topics + ["8849 m"])
    assert model.predict(["what is the everest"]) == ["8849 m"]
    assert model.predict(["what is the moon"]) == ["moon"]


# --------------------------------------------------------------------------- language modelling


@pytest.fixture
def tiny_lm() -> BigramLM:
    # unigram counts 3, 2, 2 -> add-one (4, 3, 3) / 10; bigrams (0,1), (1,2), (2,0) twice each, contexts 2 each
    return BigramLM(lam=0.5).fit(np.array([0, 1, 2, 0, 1, 2, 0]), vocab_size=3)


def test_bigram_perplexity_by_hand(tiny_lm):
    # P(1|0) = 0.5 * 2/2 + 0.5 * 3/10 = 0.65, P(2|1) = 0.65
    assert tiny_lm.perplexity([0, 1, 2]) == pytest.approx(1 / 0.65)
    # unseen bigram (0, 2): P = 0.5 * 0 + 0.5 * 0.3
    assert tiny_lm.perplexity(np.array([0, 2])) == pytest.approx(1 / 0.15)
    # P(1|0) = 0.65, P(0|1) = 0.5 * 0.4
    assert tiny_lm.perplexity([0, 1, 0]) == pytest.approx(1 / math.sqrt(0.65 * 0.2))


def test_bigram_distributions_sum_to_one():
    lm = BigramLM(lam=0.7).fit([0, 1, 0, 1, 1], vocab_size=3)  # context 2 never seen
    for v in range(3):
        assert lm.prob(np.full(3, v), np.arange(3)).sum() == pytest.approx(1.0)
    # unseen context: the add-one unigram (2 + 1, 3 + 1, 0 + 1) / 8
    np.testing.assert_allclose(lm.prob([2, 2, 2], [0, 1, 2]), [3 / 8, 4 / 8, 1 / 8])


def test_bigram_perplexity_of_continuations_by_hand(tiny_lm):
    # pair 1: P(1|0) = P(2|1) = 0.65 (only the context's last token matters); pair 2: empty context -> unigram 0.4
    pairs = [([2, 2, 0], [1, 2]), ([], [0]), ([1], [])]
    assert tiny_lm.perplexity_of_continuations(pairs) == pytest.approx((0.65 * 0.65 * 0.4) ** (-1 / 3))
    assert tiny_lm.perplexity_of_continuations([([0], [1])]) == pytest.approx(1 / 0.65)
    with pytest.raises(ValueError):
        tiny_lm.perplexity_of_continuations([([0], [])])


def test_bigram_beats_unigram_on_bigram_structure():
    vocab = 8
    train, test = np.tile(np.arange(vocab), 200), np.tile(np.arange(vocab), 10)
    lm = BigramLM().fit(train, vocab)  # lam fitted on the held-out slice
    assert lm.lam_ == pytest.approx(0.99)  # the top of the grid: the bigram is deterministic
    bigram_ppl = lm.perplexity(test)
    assert bigram_ppl < 1.02
    assert compute_unigram_perplexity(train, test, vocab) == pytest.approx(vocab, rel=1e-2)


def test_bigram_fitted_lam_is_small_on_independent_tokens():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=20_000)
    lm = BigramLM().fit(tokens, 50)
    assert lm.lam_ < 0.3  # bigram counts are noise: the unigram takes most of the weight


def test_bigram_large_vocab_without_dense_matrix():
    rng = np.random.default_rng(0)
    vocab = 8000
    lm = BigramLM(lam=0.5).fit(rng.integers(0, vocab, size=100_000), vocab)
    ppl = lm.perplexity(rng.integers(0, vocab, size=1000))
    assert math.isfinite(ppl) and ppl > 1000


def test_bigram_rejects_bad_ids(tiny_lm):
    with pytest.raises(ValueError):
        tiny_lm.perplexity([0, 3])
    with pytest.raises(ValueError):
        BigramLM(lam=0.5).fit([0, -1], 3)
    with pytest.raises(RuntimeError):
        BigramLM(lam=0.5).perplexity([0, 1])


# --------------------------------------------------------------------------- next-sentence prediction


def test_word_overlap():
    assert word_overlap("The cat", "the dog.") == pytest.approx(1 / 3)
    assert word_overlap("", "") == 0.0


def test_word_overlap_nsp_fits_a_separating_threshold():
    first = ["a b c", "a b", "a b c", "a b c d"]
    second = ["a b d", "A B c", "x y z", "a x y z w"]  # overlaps 1/2, 2/3, 0, 1/8
    labels = [1, 1, 0, 0]
    nsp = WordOverlapNSP().fit(first, second, labels)
    assert nsp.higher_is_positive and nsp.threshold == pytest.approx((1 / 8 + 1 / 2) / 2)
    assert nsp.train_accuracy_ == 1.0 and nsp.accuracy(first, second, labels) == 1.0
    assert nsp.predict(["p q", "p q"], ["p q", "r s"]) == [1, 0]

    # the opposite label convention (0 = IsNext) flips the direction, not the threshold
    flipped = WordOverlapNSP().fit(first, second, [1 - y for y in labels])
    assert not flipped.higher_is_positive and flipped.threshold == pytest.approx(nsp.threshold)
    assert flipped.predict(["p q", "p q"], ["p q", "r s"]) == [0, 1]


def test_word_overlap_nsp_maximises_train_accuracy_with_deterministic_ties():
    # overlaps 0, 1/2, 1 with labels 0, 1, 0: best accuracy 2/3, reached by "> 0.25 -> 1" (preferred),
    # "> 0.75 -> 0", and constant 0; the first is kept
    nsp = WordOverlapNSP().fit(["a", "a b", "a"], ["b", "a", "a"], [0, 1, 0])
    assert nsp.train_accuracy_ == pytest.approx(2 / 3)
    assert nsp.higher_is_positive and nsp.threshold == pytest.approx(0.25)
    with pytest.raises(ValueError):
        WordOverlapNSP().fit(["a"], ["b"], [2])


# --------------------------------------------------------------------------- span corruption


def test_span_corruption_baseline_exact_value():
    sentinels = {32099, 32098}
    targets = [[32099, 5, 6, 32098, 5, 1], [32099, 7, -100, -100]]
    # 8 scored tokens: 3 sentinels + 2 fives correct
    assert span_corruption_baseline_accuracy(targets, sentinels, most_frequent_id=5) == pytest.approx(5 / 8)
    assert span_corruption_baseline_accuracy(targets, sentinels, 5, ignore_id=None) == pytest.approx(5 / 10)
    padded = np.array([[32099, 5, -100], [32098, 6, 5]])
    assert span_corruption_baseline_accuracy(padded, sentinels, 5) == pytest.approx(4 / 5)
    with pytest.raises(ValueError):
        span_corruption_baseline_accuracy([[-100]], sentinels, 5)


def test_most_frequent_token_excludes_sentinels():
    train = [5, 5, 32099, 32099, 32099, 6, -100, -100, -100, -100]
    assert most_frequent_token(train, exclude={32099, -100}) == 5
    assert most_frequent_token([3, 2, 2, 3]) == 2  # tie: smallest id


def test_tfidf_logreg_learns_word_cues_and_picks_c_on_val_only():
    rng = np.random.default_rng(0)
    cues = ["kernel driver", "python module", "font glyphs"]
    filler = [f"w{i}" for i in range(40)]

    def texts(n: int) -> tuple[list[str], list[int]]:
        labels = rng.integers(0, 3, n).tolist()
        return [" ".join([*rng.choice(filler, 6), cues[y], *rng.choice(filler, 6)]) for y in labels], labels

    train, val, test = texts(90), texts(30), texts(30)
    model = TfidfLogReg(cs=(0.01, 10.0)).fit(*train, *val, num_classes=3)
    assert model.c_ == 10.0  # at C=0.01 the penalty flattens it to the majority label: val picks 10
    assert model.predict(test[0]) == test[1]
    # no validation split: the first C, never a look at test
    assert TfidfLogReg(cs=(0.3, 3.0)).fit(*train).c_ == 0.3
    with pytest.raises(ValueError, match="at least 2 train labels"):
        TfidfLogReg().fit(["a b", "a c"], [1, 1])
    with pytest.raises(RuntimeError, match="before fit"):
        TfidfLogReg().predict(["a"])
