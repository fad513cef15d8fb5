"""Pure text metrics for generation tasks: no I/O, no models. Inputs are plain strings.

Scales: ROUGE, exact match, token F1, distinct-n and repetition rate are in [0, 1]; BLEU and chrF are
on sacrebleu's 0-100 scale (its convention, and the one papers report).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import sacrebleu
from rouge_score import rouge_scorer

_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(references) == 0:
        raise ValueError("a metric over an empty set is undefined")


def compute_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure over examples, in [0, 1]: keys rouge1, rouge2, rougeL.

    rouge-score's RougeScorer with use_stemmer=True (Porter stemmer). Its default tokenizer lowercases and
    replaces every character outside [a-z0-9] by a space, so non-ASCII letters are dropped ("café" -> "caf")
    and text in a non-Latin script scores 0: fine for English summaries, not for other languages.
    An empty prediction or reference scores 0 on that example.
    """
    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # score(target, prediction)
        for key in _ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: totals[key] / len(references) for key in _ROUGE_TYPES}


def compute_bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level BLEU and chrF (keys bleu, chrf), both on sacrebleu's 0-100 scale, not [0, 1].

    sacrebleu's corpus_bleu / corpus_chrf with their defaults (13a tokenizer, exponential smoothing for BLEU;
    character 6-grams, beta=2 for chrF), one reference per example. Corpus-level, so not a mean of
    sentence scores. Values are clipped to [0, 100] (float rounding can give 100.00000000000004).
    """
    _check_pairs(predictions, references)
    preds, refs = list(predictions), [list(references)]
    bleu = sacrebleu.corpus_bleu(preds, refs).score
    chrf = sacrebleu.corpus_chrf(preds, refs).score
    return {"bleu": min(max(float(bleu), 0.0), 100.0), "chrf": min(max(float(chrf), 0.0), 100.0)}


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def compute_exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of examples whose normalised prediction equals the normalised reference, in [0, 1]."""
    _check_pairs(predictions, references)
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return hits / len(references)


def _token_f1(prediction: str, reference: str) -> float:
    pred_tokens, ref_tokens = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)  # both empty: 1; only one empty: 0
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def compute_token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean SQuAD token F1 (bag-of-tokens overlap of the normalised answers), in [0, 1].

    An example where both normalised answers are empty scores 1; where only one is empty, 0.
    """
    _check_pairs(predictions, references)
    return sum(_token_f1(p, r) for p, r in zip(predictions, references)) / len(references)


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def compute_distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams, pooled over all texts, in [0, 1].

    Tokens are whitespace-split, case kept; n-grams do not cross text boundaries. 0.0 if there is no n-gram.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for text in texts for g in _ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def compute_repetition_rate(texts: Sequence[str], n: int = 4) -> float:
    """Mean within-text n-gram repetition, in [0, 1] (seq-rep-n of Welleck et al., 2019).

    For each text: 1 - unique n-grams / total n-grams, i.e. the share of its n-grams that repeat an earlier
    n-gram of the same text; averaged over the texts that have at least one n-gram (whitespace tokens, case
    kept). Texts shorter than n tokens are skipped; 0.0 if no text has an n-gram. 0 means no repetition;
    a text looping one token scores close to 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rates = []
    for text in texts:
        grams = _ngrams(text.split(), n)
        if grams:
            rates.append(1.0 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0
