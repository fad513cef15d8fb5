"""Model-free baselines for the evaluation stage: the floors a trained model must clear. No I/O.

- classification: TfidfLogReg (TF-IDF word 1-2-grams + logistic regression, C chosen on val);
- summarisation: lead_sentences / lead_words (lead-k), copy_source;
- extractive / short-answer QA: most_frequent_answer, NearestQuestion (TF-IDF nearest train question);
- language modelling: BigramLM (interpolated bigram over token ids);
- next-sentence prediction: WordOverlapNSP (one threshold on word overlap);
- span corruption: span_corruption_baseline_accuracy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from llm_pipeline.evaluation.metrics import compute_macro_f1
from llm_pipeline.evaluation.text_metrics import normalize_answer

# a sentence ends at . ! or ? (optionally followed by closing quotes/brackets) followed by whitespace
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_WORD = re.compile(r"\w+")


# --------------------------------------------------------------------------- classification


class TfidfLogReg:
    """The strongest cheap text classifier: TF-IDF over word 1-2-grams (sublinear tf, terms in at
    least 2 train texts) + multinomial logistic regression (scikit-learn). The inverse regularisation
    C is chosen from `cs` by macro-F1 on the validation split (ties: the smaller C); every candidate
    is fitted on train alone, so the chosen one is kept as it is and the test split is never looked
    at. The vocabulary and idf depend on the train texts only, so they are fitted once for all Cs.
    Labels are ints 0..K-1.
    """

    def __init__(self, cs: Sequence[float] = (0.3, 1.0, 3.0, 10.0, 30.0), seed: int = 0) -> None:
        if not cs or min(cs) <= 0:
            raise ValueError(f"cs must be positive values, got {list(cs)}")
        self.cs = tuple(cs)
        self.seed = seed
        self.c_: float = self.cs[0]
        self._vectorizer: Any = None
        self._classifier: Any = None

    def _classifier_for(self, c: float) -> Any:
        # imported here: scikit-learn costs ~1 s to import, and only this baseline needs it
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=c, max_iter=2000, random_state=self.seed)

    def fit(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int],
        val_texts: Sequence[str] = (),
        val_labels: Sequence[int] = (),
        num_classes: int | None = None,
    ) -> TfidfLogReg:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if len(train_texts) != len(train_labels):
            raise ValueError(f"{len(train_texts)} train texts but {len(train_labels)} labels")
        if len(set(train_labels)) < 2:
            raise ValueError("TF-IDF + logistic regression needs at least 2 train labels")
        k = num_classes or max(train_labels) + 1
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        features = self._vectorizer.fit_transform(list(train_texts))  # (N, terms), sparse
        labels = list(train_labels)
        if not (len(val_texts) and len(self.cs) > 1):
            self._classifier = self._classifier_for(self.c_).fit(features, labels)
            return self
        val_features = self._vectorizer.transform(list(val_texts))
        best = -1.0
        for c in self.cs:
            classifier = self._classifier_for(c).fit(features, labels)
            score = compute_macro_f1(classifier.predict(val_features), val_labels, k)
            if score > best:  # strictly: the first (smallest C) wins a tie
                best, self.c_, self._classifier = score, c, classifier
        return self

    def predict(self, texts: Sequence[str]) -> list[int]:
        if self._classifier is None:
            raise RuntimeError("TfidfLogReg.predict called before fit")
        return [int(p) for p in self._classifier.predict(self._vectorizer.transform(list(texts)))]


# --------------------------------------------------------------------------- summarisation


def split_sentences(text: str) -> list[str]:
    """A simple sentence splitter: every line break ends a sentence, and within a line a sentence ends
    after '.', '!' or '?' (plus any closing quotes/brackets) followed by whitespace. Sentences are
    stripped and empty ones dropped. No abbreviation handling: "Mr. Smith" splits after "Mr.".
    """
    sentences = []
    for line in text.splitlines():
        pos = 0
        for m in _SENTENCE_END.finditer(line):
            sentences.append(line[pos : m.end()])
            pos = m.end()
        sentences.append(line[pos:])
    return [s.strip() for s in sentences if s.strip()]


def lead_sentences(text: str, k: int = 1) -> str:
    """Lead-k: the first k sentences of `text` (split_sentences), joined by single spaces."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return " ".join(split_sentences(text)[:k])


def lead_words(text: str, k: int) -> str:
    """The first k whitespace-separated words of `text`, joined by single spaces."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return " ".join(text.split()[:k])


def copy_source(sources: Sequence[str]) -> list[str]:
    """Copy baseline: predict the source text itself (an upper bound on recall-oriented overlap)."""
    return list(sources)


# --------------------------------------------------------------------------- question answering


def most_frequent_answer(train_answers: Sequence[str]) -> str:
    """The most frequent train answer after SQuAD normalisation, returned in its most frequent original
    spelling. Ties (of normalised answers, then of spellings) go to the one seen first."""
    if len(train_answers) == 0:
        raise ValueError("no train answers")
    spellings: dict[str, Counter[str]] = {}
    for answer in train_answers:
        spellings.setdefault(normalize_answer(answer), Counter())[answer] += 1
    # Counter.most_common and max keep insertion order on ties
    best = max(spellings, key=lambda norm: sum(spellings[norm].values()))
    return spellings[best].most_common(1)[0][0]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class NearestQuestion:
    """Answer a question with the answer of the most similar train question.

    Similarity: cosine of TF-IDF vectors over lowercased word unigrams (regex \\w+), raw term counts times
    smoothed idf = ln((1 + N) / (1 + df)) + 1, N = number of train questions. Vectors are held sparse as
    per-term posting arrays, so the cost is O(postings of the query's terms), not O(N * vocabulary).
    Ties go to the earliest train question; a question sharing no word with any train question gets the
    most frequent train answer (most_frequent_answer).
    """

    def __init__(self) -> None:
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._idf: dict[str, float] = {}
        self._answers: list[str] = []
        self._fallback = ""

    def fit(self, questions: Sequence[str], answers: Sequence[str]) -> NearestQuestion:
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        if len(questions) == 0:
            raise ValueError("no train questions")
        n = len(questions)
        term_counts = [Counter(_words(q)) for q in questions]
        df = Counter(term for counts in term_counts for term in counts)
        self._idf = {term: math.log((1 + n) / (1 + d)) + 1.0 for term, d in df.items()}
        docs: dict[str, list[int]] = {}
        weights: dict[str, list[float]] = {}
        for i, counts in enumerate(term_counts):
            vec = {term: c * self._idf[term] for term, c in counts.items()}
            norm = math.sqrt(sum(w * w for w in vec.values()))
            for term, w in vec.items():
                docs.setdefault(term, []).append(i)
                weights.setdefault(term, []).append(w / norm)
        self._postings = {
            term: (np.asarray(docs[term], dtype=np.int64), np.asarray(weights[term], dtype=np.float64)) for term in docs
        }
        self._answers = list(answers)
        self._fallback = most_frequent_answer(self._answers)
        return self

    def predict(self, questions: Sequence[str]) -> list[str]:
        if not self._answers:
            raise RuntimeError("NearestQuestion.predict called before fit")
        out = []
        scores = np.zeros(len(self._answers))
        for question in questions:
            # the query's norm is the same for every train question, so it does not change the argmax
            query = {t: c * self._idf[t] for t, c in Counter(_words(question)).items() if t in self._idf}
            if not query:
                out.append(self._fallback)
                continue
            scores[:] = 0.0
            for term, qw in query.items():
                doc_ids, doc_w = self._postings[term]
                scores[doc_ids] += qw * doc_w  # doc ids are unique within a posting list
            out.append(self._answers[int(np.argmax(scores))])  # argmax: first index on ties
        return out


# --------------------------------------------------------------------------- language modelling


class BigramLM:
    """Bigram language model over token ids, Jelinek-Mercer interpolated with an add-one unigram:

        P(w | v) = lam * c(v, w) / c(v) + (1 - lam) * (c(w) + 1) / (N + V)

    c(v, w): bigram counts, c(v): count of v as a bigram context, c(w): unigram counts, N: train tokens,
    V: vocab_size. For a context never seen in train (c(v) = 0), P(w | v) is the add-one unigram. Every
    P(. | v) sums to 1 and is > 0. `lam=None` (default) fits lam on a held-out slice: counts from the first
    (1 - heldout_fraction) of the tokens, lam on a 0.01..0.99 grid maximising the slice's likelihood, then
    counts refitted on all tokens; the chosen value is `lam_`. Bigram counts are kept as sorted pair codes
    v * V + w (np.unique), never as a dense V x V matrix.
    """

    def __init__(self, lam: float | None = None, heldout_fraction: float = 0.1) -> None:
        if lam is not None and not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.lam = lam
        self.heldout_fraction = heldout_fraction
        self.lam_: float = 0.0 if lam is None else lam
        self.vocab_size = 0
        self._codes = np.zeros(0, dtype=np.int64)
        self._pair_counts = np.zeros(0, dtype=np.float64)
        self._context_counts = np.zeros(0, dtype=np.float64)
        self._unigram = np.zeros(0, dtype=np.float64)

    def _ids(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")
        return ids

    def _count(self, ids: np.ndarray) -> None:
        v = self.vocab_size
        self._codes, counts = np.unique(ids[:-1] * v + ids[1:], return_counts=True)
        self._pair_counts = counts.astype(np.float64)
        self._context_counts = np.bincount(ids[:-1], minlength=v).astype(np.float64)
        self._unigram = (np.bincount(ids, minlength=v) + 1.0) / (ids.size + v)

    def _parts(self, prev: np.ndarray, nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ML bigram probability, add-one unigram probability, context seen) for each (prev, nxt) pair."""
        codes = prev * self.vocab_size + nxt
        pos = np.minimum(np.searchsorted(self._codes, codes), max(len(self._codes) - 1, 0))
        pair = np.where(self._codes[pos] == codes, self._pair_counts[pos], 0.0) if len(self._codes) else 0.0
        ctx = self._context_counts[prev]
        seen = ctx > 0
        ml = np.divide(pair, ctx, out=np.zeros(len(codes)), where=seen)
        return ml, self._unigram[nxt], seen

    def fit(self, tokens: np.ndarray | Sequence[int], vocab_size: int) -> BigramLM:
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = vocab_size
        ids = self._ids(tokens)
        if ids.size < 2:
            raise ValueError("need at least 2 train tokens")
        if self.lam is None:
            cut = int(round(ids.size * (1.0 - self.heldout_fraction)))
            if cut < 2 or ids.size - cut < 2:
                raise ValueError("too few train tokens to fit lam on a held-out slice: pass lam")
            self._count(ids[:cut])
            held = ids[cut:]
            ml, uni, seen = self._parts(held[:-1], held[1:])
            grid = np.linspace(0.01, 0.99, 99)
            loglik = [np.log(np.where(seen, lam * ml + (1 - lam) * uni, uni)).sum() for lam in grid]
            self.lam_ = float(grid[int(np.argmax(loglik))])
        self._count(ids)
        return self

    def prob(self, prev: np.ndarray | Sequence[int], nxt: np.ndarray | Sequence[int]) -> np.ndarray:
        """P(nxt[i] | prev[i]) for each i."""
        if self.vocab_size == 0:
            raise RuntimeError("BigramLM used before fit")
        prev_ids, next_ids = self._ids(prev), self._ids(nxt)
        if prev_ids.shape != next_ids.shape:
            raise ValueError("prev and nxt must have the same length")
        ml, uni, seen = self._parts(prev_ids, next_ids)
        return np.where(seen, self.lam_ * ml + (1.0 - self.lam_) * uni, uni)

    def perplexity(self, tokens: np.ndarray | Sequence[int]) -> float:
        """exp(mean -ln P(tokens[i] | tokens[i-1])) over i = 1..len-1 (the first token is not scored)."""
        if self.vocab_size == 0:
            raise RuntimeError("BigramLM used before fit")
        ids = self._ids(tokens)
        if ids.size < 2:
            raise ValueError("need at least 2 tokens")
        return float(math.exp(-np.log(self.prob(ids[:-1], ids[1:])).mean()))

    def perplexity_of_continuations(
        self, pairs: Iterable[tuple[np.ndarray | Sequence[int], np.ndarray | Sequence[int]]]
    ) -> float:
        """Perplexity over the continuation tokens only, pooled over all (context_ids, continuation_ids) pairs
        (token-weighted). Each continuation token is conditioned on the token before it; the first one on the
        context's last token, or, for an empty context, scored with the add-one unigram."""
        if self.vocab_size == 0:
            raise RuntimeError("BigramLM used before fit")
        nll, count = 0.0, 0
        for context, continuation in pairs:
            ctx, cont = self._ids(context), self._ids(continuation)
            if cont.size == 0:
                continue
            if ctx.size:
                nll -= float(np.log(self.prob(np.concatenate([ctx[-1:], cont[:-1]]), cont)).sum())
            else:
                nll -= float(np.log(self._unigram[cont[0]]) + np.log(self.prob(cont[:-1], cont[1:])).sum())
            count += cont.size
        if count == 0:
            raise ValueError("no continuation tokens to score")
        return float(math.exp(nll / count))


# --------------------------------------------------------------------------- next-sentence prediction


def word_overlap(first: str, second: str) -> float:
    """Jaccard overlap |A & B| / |A | B| of the two segments' sets of lowercased \\w+ words; 0 if both empty."""
    a, b = set(_words(first)), set(_words(second))
    union = a | b
    return len(a & b) / len(union) if union else 0.0


class WordOverlapNSP:
    """Next-sentence prediction from one feature, word_overlap(first, second), and one threshold.

    Labels are 0/1. The intended convention is 1 = the second segment follows the first (IsNext) and
    0 = random segment; note Hugging Face's BertForPreTraining uses the opposite (0 = IsNext). Either works:
    fit chooses the threshold *and* the direction (`higher_is_positive`: predict 1 when overlap > threshold,
    else predict 1 when overlap <= threshold) that maximise train accuracy, so predictions come back in the
    caller's own convention. Thresholds are midpoints between consecutive distinct train overlaps (or
    -inf / +inf: a constant prediction). Ties prefer higher_is_positive=True, then the lowest threshold.
    """

    def __init__(self) -> None:
        self.threshold: float = 0.0
        self.higher_is_positive: bool = True
        self.train_accuracy_: float = 0.0
        self._fitted = False

    @staticmethod
    def _features(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        if len(first) != len(second):
            raise ValueError(f"{len(first)} first segments but {len(second)} second segments")
        return np.array([word_overlap(a, b) for a, b in zip(first, second)], dtype=np.float64)

    def fit(self, first: Sequence[str], second: Sequence[str], labels: Sequence[int]) -> WordOverlapNSP:
        x, y = self._features(first, second), np.asarray(labels, dtype=np.int64)
        if len(y) != len(x):
            raise ValueError(f"{len(x)} pairs but {len(y)} labels")
        if len(y) == 0:
            raise ValueError("no train pairs")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        values, inverse = np.unique(x, return_inverse=True)
        pos = np.bincount(inverse, weights=(y == 1), minlength=len(values))
        neg = np.bincount(inverse, weights=(y == 0), minlength=len(values))
        # candidate j puts values[:j] at or below the threshold and values[j:] above it
        pos_low = np.concatenate([[0.0], np.cumsum(pos)])
        neg_low = np.concatenate([[0.0], np.cumsum(neg)])
        # numbers of correct train predictions (exact integers, so ties compare exactly)
        right_high = np.rint(neg_low + (pos.sum() - pos_low)).astype(np.int64)  # predict 1 above the threshold
        right_low = len(y) - right_high  # predict 1 at or below it
        thresholds = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
        j_high, j_low = int(np.argmax(right_high)), int(np.argmax(right_low))
        self.higher_is_positive = bool(right_high[j_high] >= right_low[j_low])
        j = j_high if self.higher_is_positive else j_low
        self.threshold = float(thresholds[j])
        self.train_accuracy_ = max(int(right_high[j_high]), int(right_low[j_low])) / len(y)
        self._fitted = True
        return self

    def predict(self, first: Sequence[str], second: Sequence[str]) -> list[int]:
        if not self._fitted:
            raise RuntimeError("WordOverlapNSP.predict called before fit")
        above = self._features(first, second) > self.threshold
        return [int(a == self.higher_is_positive) for a in above]

    def accuracy(self, first: Sequence[str], second: Sequence[str], labels: Sequence[int]) -> float:
        preds, gold = np.asarray(self.predict(first, second)), np.asarray(labels)
        if len(gold) != len(preds):
            raise ValueError(f"{len(preds)} pairs but {len(gold)} labels")
        if len(gold) == 0:
            raise ValueError("accuracy of an empty set is undefined")
        return float((preds == gold).mean())


# --------------------------------------------------------------------------- span corruption


def most_frequent_token(train_tokens: np.ndarray | Sequence[int], exclude: Iterable[int] = ()) -> int:
    """The most frequent id in `train_tokens` outside `exclude` (pass the sentinels, pad, -100...); ties go to
    the smallest id."""
    ids = np.asarray(train_tokens, dtype=np.int64).ravel()
    ids = ids[~np.isin(ids, np.fromiter(exclude, dtype=np.int64))]
    if ids.size == 0:
        raise ValueError("no train tokens left after exclusion")
    values, counts = np.unique(ids, return_counts=True)
    return int(values[np.argmax(counts)])


def span_corruption_baseline_accuracy(
    targets: Sequence[Sequence[int]] | Sequence[np.ndarray] | np.ndarray,
    sentinel_ids: Iterable[int],
    most_frequent_id: int,
    ignore_id: int | None = -100,
) -> float:
    """Token accuracy of the span-corruption baseline over all target tokens, in [0, 1].

    The baseline predicts every sentinel position exactly (the sentinels are known from the input) and
    `most_frequent_id` (most_frequent_token of the train tokens, sentinels excluded) everywhere else.
    Positions equal to `ignore_id` (label padding, -100 by default; None: none ignored) are not counted.
    `targets`: one id sequence per example (lengths may differ) or a 2-D array. Pass the EOS id among
    `sentinel_ids` too if the baseline should be credited for predicting the end.
    """
    flat = [np.asarray(t, dtype=np.int64).ravel() for t in targets]
    ids = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
    if ignore_id is not None:
        ids = ids[ids != ignore_id]
    if ids.size == 0:
        raise ValueError("no target tokens to score")
    sentinels = np.isin(ids, np.fromiter(sentinel_ids, dtype=np.int64))
    correct = sentinels | (ids == most_frequent_id)
    return float(correct.mean())
