"""Beam search in `generate` (llm_pipeline.models.decoding), for GPT and T5 alike.

Every expected value comes from full forward passes without a cache: the log-probability of
prompt + tokens, or the optimum over every sequence of a tiny vocabulary.

`generate(..., on_token=...)`: the per-token callback streaming is built on (models/decoding.py).
"""

from __future__ import annotations

import itertools
from typing import Any, cast

import pytest
import torch

from llm_pipeline.families import build_model
from llm_pipeline.models import GPT, T5, decoding
from llm_pipeline.models.attention import KVCache

FAMILIES = ("gpt", "gpt-modern", "t5")


def _model(family: str, vocab: int) -> GPT | T5:
    torch.manual_seed(0)
    if family.startswith("gpt"):  # a short window, so long generations slide it (and rebuild the cache)
        preset = "tiny-modern" if family == "gpt-modern" else "tiny"
        return cast(GPT, build_model("gpt", preset, vocab, block_size=16).eval())
    return cast(T5, build_model("t5", "tiny", vocab).eval())


def _logprob(model: GPT | T5, prompt: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Summed log-probability (M,) of continuations seqs (M, n) of one prompt (T,), by one full forward."""
    src = prompt[None].expand(seqs.size(0), -1)  # (M, T)
    with torch.no_grad():
        if isinstance(model, T5):  # the prompt is the encoder input
            logits = model(src, model.shift_right(seqs)).logits  # (M, n, V)
        else:  # GPT: the logits at position i predict token i + 1
            logits = model(torch.cat((src, seqs), dim=1)).logits[:, src.size(1) - 1 : -1]  # (M, n, V)
    return logits.float().log_softmax(-1).gather(-1, seqs[..., None])[..., 0].sum(-1)


def _trim(row: torch.Tensor, stop_ids) -> torch.Tensor:
    """The row up to and including its first stop id."""
    hits = torch.isin(row, torch.tensor(list(stop_ids), dtype=row.dtype)).nonzero()
    return row if not len(hits) else row[: int(hits[0]) + 1]


def _padded(family: str, prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of prompts of different lengths: GPT left-pads (its prompts end where it continues), T5 right-pads."""
    width = max(len(p) for p in prompts)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, p in enumerate(prompts):
        span = slice(width - len(p), width) if family.startswith("gpt") else slice(0, len(p))
        batch[row, span], mask[row, span] = p, 1
    return batch, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_width_one_is_greedy(family):
    model = _model(family, 30)
    prompts = torch.randint(30, (3, 5))
    want, want_scores = model.generate(prompts, 8, return_scores=True)
    got, scores = decoding.beam_search(model.decode_step(prompts), 8, num_beams=1)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(scores, want_scores)
    # with stop ids too, where length_penalty 0 makes stopping now as good as greedy says it is
    stop = int(want[0, 2])
    want, want_scores = model.generate(prompts, 8, stop_ids=[stop], length_penalty=0.0, return_scores=True)
    got, scores = decoding.beam_search(model.decode_step(prompts), 8, 1, stop_ids=[stop], length_penalty=0.0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(scores, want_scores)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_beam_that_holds_every_sequence_finds_the_exhaustive_optimum(family, length_penalty):
    V, L = 5, 3
    model = _model(family, V)
    prompts = torch.randint(V, (2, 4))
    every = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (V**L, L)
    tokens, scores = model.generate(prompts, L, num_beams=V**L, length_penalty=length_penalty, return_scores=True)
    for row, prompt in enumerate(prompts):
        logprob = _logprob(model, prompt, every)  # (V**L,)
        best = int(logprob.argmax())
        assert tokens[row].tolist() == every[best].tolist()
        assert float(scores[row]) == pytest.approx(float(logprob[best]) / L**length_penalty, abs=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("family", FAMILIES)
def test_with_a_stop_id_the_wide_beam_finds_the_best_of_every_length(family, length_penalty):
    """Every text of at most L tokens that ends at the stop id or at L (85 for V=5, L=3),
    each scored at its own length: here length_penalty decides between short and long ones."""
    V, L, stop = 5, 3, 2
    model = _model(family, V)
    prompts = torch.randint(V, (2, 4))
    others = [v for v in range(V) if v != stop]
    texts = [
        [*head, last]
        for n in range(1, L + 1)
        for head in itertools.product(others, repeat=n - 1)
        for last in ([stop] if n < L else range(V))
    ]
    tokens, scores = model.generate(
        prompts, L, num_beams=V**L, stop_ids=[stop], length_penalty=length_penalty, return_scores=True
    )
    for row, prompt in enumerate(prompts):
        normalised = [float(_logprob(model, prompt, torch.tensor([t]))) / len(t) ** length_penalty for t in texts]
        best = max(range(len(texts)), key=normalised.__getitem__)
        assert _trim(tokens[row], [stop]).tolist() == texts[best]
        assert float(scores[row]) == pytest.approx(normalised[best], abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_score_is_the_full_forward_log_prob_of_prompt_plus_tokens(family):
    V = 6
    model = _model(family, V)
    prompts = torch.randint(V, (3, 5))
    stopped = 0
    for stop in range(V):  # every token in turn as the stop id, so many rows stop, at various steps
        runs: list[dict[str, Any]] = [
            dict(num_beams=4),
            dict(num_beams=3, length_penalty=0.5),
            dict(num_beams=1),  # greedy and sampling score the same way
            dict(num_beams=1, temperature=1.0, generator=torch.Generator().manual_seed(stop)),
        ]
        for options in runs:
            tokens, scores = model.generate(prompts, 7, stop_ids=[stop], return_scores=True, **options)
            lp = options.get("length_penalty", 1.0)
            for row, prompt in enumerate(prompts):
                text = _trim(tokens[row], [stop])
                assert (tokens[row, len(text) :] == stop).all()  # padded with the stop id after it
                stopped += int(text[-1] == stop)
                want = float(_logprob(model, prompt, text[None])) / len(text) ** lp
                assert float(scores[row]) == pytest.approx(want, abs=1e-5), (stop, options, row)
    assert stopped >= 10, stopped  # the stop ids were in play (of 72 rows)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_padded_batch_decodes_what_each_row_would_alone(family):
    V = 12
    model = _model(family, V)
    prompts = [torch.randint(1, V, (n,)) for n in (3, 6, 4)]
    batch, mask = _padded(family, prompts)
    free = model.generate(batch, 10, attention_mask=mask, num_beams=4)
    stop = int(free[0, 3])  # a token the search reaches anyway
    tokens, scores = model.generate(batch, 10, attention_mask=mask, num_beams=4, stop_ids=[stop], return_scores=True)
    for row, prompt in enumerate(prompts):
        alone, alone_score = model.generate(prompt[None], 10, num_beams=4, stop_ids=[stop], return_scores=True)
        n = alone.size(1)
        assert tokens[row, :n].tolist() == alone[0].tolist()
        assert (tokens[row, n:] == stop).all()
        assert float(scores[row]) == pytest.approx(float(alone_score[0]), abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cache_changes_nothing(family):
    model = _model(family, 20)
    prompts = torch.randint(20, (3, 6))
    for stop_ids in ((), (int(model.generate(prompts, 4, num_beams=4)[1, 3]),)):
        # 6 + 14 tokens run past GPT's block_size 16: the window slides and the cache is rebuilt
        runs = [
            model.generate(prompts, 14, num_beams=4, stop_ids=stop_ids, use_cache=c, return_scores=True)
            for c in (True, False)
        ]
        torch.testing.assert_close(runs[0][0], runs[1][0])
        torch.testing.assert_close(runs[0][1], runs[1][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_these_searches_need_the_cache_to_follow_the_beams(family, monkeypatch):
    """Guards the tests above: the beams do change parents, so a cache that only expanded the
    prompts into beams but then kept each beam's own old row would decode something else."""
    model = _model(family, 20)
    prompts = torch.randint(20, (3, 6))
    right = model.generate(prompts, 14, num_beams=4, return_scores=True)
    reorder = KVCache.reorder
    monkeypatch.setattr(KVCache, "reorder", lambda self, rows: reorder(self, rows.sort().values))
    wrong = model.generate(prompts, 14, num_beams=4, return_scores=True)
    assert not torch.allclose(right[1], wrong[1], atol=1e-4)


def test_beam_search_refuses_sampling_and_empty_beams():
    model = _model("gpt", 20)
    prompt = torch.randint(20, (1, 4))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 4, num_beams=2, temperature=0.7)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(prompt, 4, num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, 0, num_beams=2)


def _chain(start: list[float], after: list[list[float]]) -> decoding.DecodeStep:
    """A scripted one-row model: first-token probabilities `start` (V,), then `after[v]` (V,) after token v."""
    first, table = torch.tensor([start]).log(), torch.tensor(after).log()  # (1, V), (V, V)

    def next_logits(new: torch.Tensor | None) -> torch.Tensor:
        return first if new is None else table[new[:, 0]]  # (N, V): depends on the last token only

    return decoding.DecodeStep(next_logits, lambda rows: None)  # no state beyond the ids it is fed


def test_search_goes_on_while_a_live_beam_can_still_win():
    """Stop id 0 at once scores log .5 = -0.69; token 1 (log .45) then two near-certain 1s scores
    about -0.82 / 3 = -0.27 under length_penalty 1. After the first step the live beam is at -0.80,
    worse than the finished one at its length now, but not over the 3 tokens it may still reach."""
    step = _chain([0.5, 0.45, 0.05], [[1 / 3] * 3, [0.005, 0.99, 0.005], [1 / 3] * 3])
    tokens, scores = decoding.beam_search(step, 3, num_beams=1, stop_ids=[0], length_penalty=1.0)
    assert tokens.tolist() == [[1, 1, 1]]
    assert float(scores[0]) == pytest.approx((torch.tensor([0.45, 0.99, 0.99]).log().sum() / 3).item(), abs=1e-6)


def test_a_finished_hypothesis_is_never_extended():
    """After the stop id the chain is near-certain, so extending the finished [0] would score better
    under length_penalty 1 (-0.04 vs -0.11); it must stay finished: [0], log .9, and the search
    ends there (every other text is far worse)."""
    step = _chain([0.9, 0.05, 0.05], [[0.001, 0.998, 0.001], [0.01, 0.98, 0.01], [0.01, 0.98, 0.01]])
    tokens, scores = decoding.beam_search(step, 3, num_beams=2, stop_ids=[0], length_penalty=1.0)
    assert tokens.tolist() == [[0]]
    assert float(scores[0]) == pytest.approx(torch.tensor(0.9).log().item(), abs=1e-6)


def _has_repeated_ngram(row: list[int], n: int) -> bool:
    grams = [tuple(row[i : i + n]) for i in range(len(row) - n + 1)]
    return len(grams) != len(set(grams))


def test_the_repeated_ngram_mask_bans_exactly_the_tokens_that_would_repeat_one():
    torch.manual_seed(3)
    vocab = 5
    for _ in range(50):
        n = int(torch.randint(1, 4, ()))
        tokens = torch.randint(vocab, (4, int(torch.randint(0, 9, ())))).long()
        mask = decoding.repeated_ngram_mask(tokens, n, vocab)
        for row, banned in zip(tokens.tolist(), mask.tolist()):
            seen = {tuple(row[i : i + n]) for i in range(len(row) - n + 1)}
            for v in range(vocab):  # banned iff appending v completes an n-gram the row already holds
                assert (banned[v] == float("-inf")) == (tuple([*row, v][-n:]) in seen), (row, n, v)
                assert banned[v] in (0.0, float("-inf"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_repeat_ngram_outputs_repeat_no_ngram_and_keep_exact_scores(family, num_beams):
    model = _model(family, 12)  # a small vocabulary, so an untrained model loops without the ban
    prompts = torch.randint(12, (3, 4))
    free = model.generate(prompts, 12, num_beams=num_beams)
    assert any(_has_repeated_ngram(row, 2) for row in free.tolist())  # the ban below has work to do
    tokens, scores = model.generate(prompts, 12, num_beams=num_beams, no_repeat_ngram_size=2, return_scores=True)
    for prompt, row, score in zip(prompts, tokens, scores):
        assert not _has_repeated_ngram(row.tolist(), 2)
        # scores are the model's own log-probabilities of what it wrote, not of a renormalised ban
        assert float(score) == pytest.approx(float(_logprob(model, prompt, row[None])[0]) / len(row), abs=1e-4)


@pytest.mark.parametrize("family", ["gpt", "t5"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_on_token_sees_each_step_as_generate_returns_it(family, temperature):
    torch.manual_seed(0)
    model = cast(Any, build_model(family, "tiny", 40).eval())  # GPT | T5: both have generate
    ids = torch.randint(3, 40, (2, 5))
    seen: list[torch.Tensor] = []
    kwargs = dict(temperature=temperature, top_k=10, stop_ids=(7,))
    out = model.generate(ids, 9, generator=torch.Generator().manual_seed(3), on_token=seen.append, **kwargs)
    again = model.generate(ids, 9, generator=torch.Generator().manual_seed(3), **kwargs)
    assert all(step.shape == (2, 1) for step in seen)
    torch.testing.assert_close(torch.cat(seen, dim=1), out, rtol=0, atol=0)
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # the callback changes nothing


def test_beam_search_takes_no_on_token():
    model = cast(Any, build_model("gpt", "tiny", 40).eval())
    with pytest.raises(ValueError, match="on_token"):
        model.generate(torch.ones(1, 3, dtype=torch.long), 4, num_beams=2, on_token=lambda new: None)
