"""The one decoding loop behind every family's `generate`: greedy, sampling and beam search.

A family supplies only a DecodeStep, from `model.decode_step(input_ids, attention_mask, use_cache)`:
`next_logits(new_ids)` takes the ids chosen at the last step, (N, 1) or None on the first, and
returns the logits (N, V) for the next position, keeping whatever cache it likes; `reorder(rows)`
keeps the rows `rows` (N',) of that state (prompt, tokens so far, KV cache), in that order,
repeats allowed. Greedy and sampling never reorder (N = B throughout). Beam search reorders after
every step: the first call expands the B prompts into B*k beams, so prompts (and T5's encoder)
run once per prompt, not once per beam; later calls move each beam onto the beam it extends.

The families share `generate` itself too (`GPT.generate = T5.generate = decoding.generate`), so
its signature and arguments live here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, overload

import torch
import torch.nn.functional as F

from llm_pipeline.models.sampling import sample_next


@dataclass(frozen=True)
class DecodeStep:
    """What a family hands the loop: the next logits, and a way to follow beams through its state."""

    next_logits: Callable[[torch.Tensor | None], torch.Tensor]  # new ids (N, 1) or None -> logits (N, V)
    reorder: Callable[[torch.Tensor], None]  # rows (N',) into the current N rows


class Decodable(Protocol):
    """A model `generate` can drive (GPT, T5)."""

    def decode_step(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, use_cache: bool
    ) -> DecodeStep: ...


@overload
def generate(
    model: Decodable,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = ...,
    temperature: float = ...,
    top_k: int | None = ...,
    top_p: float | None = ...,
    stop_ids: Sequence[int] = ...,
    generator: torch.Generator | None = ...,
    use_cache: bool = ...,
    num_beams: int = ...,
    length_penalty: float = ...,
    no_repeat_ngram_size: int = ...,
    on_token: Callable[[torch.Tensor], None] | None = ...,
    return_scores: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def generate(
    model: Decodable,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = ...,
    temperature: float = ...,
    top_k: int | None = ...,
    top_p: float | None = ...,
    stop_ids: Sequence[int] = ...,
    generator: torch.Generator | None = ...,
    use_cache: bool = ...,
    num_beams: int = ...,
    length_penalty: float = ...,
    no_repeat_ngram_size: int = ...,
    on_token: Callable[[torch.Tensor], None] | None = ...,
    return_scores: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def generate(
    model: Decodable,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = ...,
    temperature: float = ...,
    top_k: int | None = ...,
    top_p: float | None = ...,
    stop_ids: Sequence[int] = ...,
    generator: torch.Generator | None = ...,
    use_cache: bool = ...,
    num_beams: int = ...,
    length_penalty: float = ...,
    no_repeat_ngram_size: int = ...,
    on_token: Callable[[torch.Tensor], None] | None = ...,
    return_scores: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def generate(
    model: Decodable,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    on_token: Callable[[torch.Tensor], None] | None = None,
    return_scores: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Up to `max_new_tokens` new tokens (B, n), n <= max_new_tokens, continuing input_ids (B, T).

    What input_ids and attention_mask mean is the family's (see its `decode_step`: a GPT prompt,
    left-padded; a T5 encoder input). num_beams 1 picks each token on its own: greedy at
    temperature 0, else sampled (top_k, top_p, generator). num_beams > 1 is deterministic beam
    search (`beam_search`): temperature must be 0 (ValueError otherwise); top_k, top_p and
    generator are ignored, as greedy ignores them.

    A row that produced any of `stop_ids` keeps that token and is padded with stop_ids[0] after
    it. return_scores=True also returns scores (B,): the model's log-probability of each row's
    tokens up to and including its stop token (log-softmax of the raw logits, also when
    sampling), divided by (that many tokens) ** length_penalty.

    no_repeat_ngram_size n > 0 never lets a row's new tokens repeat an n-gram of its own new
    tokens (the input is not counted): the completing token is masked before choosing, as in
    Hugging Face's option of that name. Scores stay the model's unmasked log-probabilities.

    on_token, if given, is called with each step's chosen ids (B, 1) as soon as they are chosen,
    to stream text; beam search chooses its tokens only at the end, so it takes none (ValueError).
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be at least 1, got {num_beams}")
    if num_beams > 1 and on_token is not None:
        raise ValueError("beam search settles its tokens only at the end: on_token needs num_beams 1")
    if num_beams > 1 and temperature > 0:
        raise ValueError(f"beam search is deterministic: temperature must be 0 with num_beams > 1, got {temperature}")
    step = model.decode_step(input_ids, attention_mask, use_cache)
    if num_beams == 1:
        tokens, scores = sample_tokens(
            step,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            stop_ids,
            generator,
            length_penalty,
            no_repeat_ngram_size,
            on_token,
        )
    else:
        tokens, scores = beam_search(step, max_new_tokens, num_beams, stop_ids, length_penalty, no_repeat_ngram_size)
    return (tokens, scores) if return_scores else tokens


def sample_tokens(
    step: DecodeStep,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token, greedy at temperature 0: new ids (B, n) and scores (B,) as `generate` says.

    The loop ends early once every row has stopped; on_token sees each step's ids (B, 1).
    """
    _check_length(max_new_tokens)
    new: torch.Tensor | None = None
    chosen: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        logits = step.next_logits(new)  # (B, V)
        if new is None:  # first step: now the batch size and device are known
            done = torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device)  # (B,) rows that stopped
            logprob = torch.zeros(logits.size(0), device=logits.device)  # (B,) of the tokens up to the stop
            length = torch.zeros_like(logprob)  # (B,) tokens counted in logprob
            stops = torch.tensor(list(stop_ids), dtype=torch.long, device=logits.device)
        allowed = logits
        if chosen and no_repeat_ngram_size:
            allowed = logits + repeated_ngram_mask(torch.cat(chosen, dim=1), no_repeat_ngram_size, logits.size(1))
        new = sample_next(allowed, temperature, top_k, top_p, generator)  # (B, 1)
        if stop_ids:
            new = torch.where(done[:, None], torch.full_like(new, stop_ids[0]), new)
        counted = ~done  # this step's token belongs to the row's text (a stop token does too)
        token_logprob = F.log_softmax(logits.float(), dim=-1).gather(1, new)[:, 0]  # (B,)
        logprob += torch.where(counted, token_logprob, 0.0)
        length += counted
        done = done | torch.isin(new[:, 0], stops)
        chosen.append(new)
        if on_token is not None:
            on_token(new)
        if bool(done.all()):
            break
    return torch.cat(chosen, dim=1), logprob / length**length_penalty


def beam_search(
    step: DecodeStep,
    max_new_tokens: int,
    num_beams: int,
    stop_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search with k = num_beams: the best hypothesis per row, ids (B, n) and scores (B,).

    Each step extends the k live beams of a row by every token and ranks the k*V extensions by
    summed log-probability. Extensions ending in a stop id that rank in the top k are finished
    hypotheses: they join the row's k best finished (ranked by score / length ** length_penalty)
    and are never extended. The k best other extensions are the next live beams. A row is done
    once it holds k finished hypotheses and no live beam can still beat the worst; the search
    ends when every row is done, or after max_new_tokens steps, when the live beams compete with
    the finished ones at their length. The best-scoring hypothesis wins.
    """
    _check_length(max_new_tokens)
    k = num_beams
    stops = sorted(set(stop_ids))
    pad = stop_ids[0] if stop_ids else 0
    new: torch.Tensor | None = None
    for t in range(max_new_tokens):
        length = t + 1  # of every hypothesis this step makes
        logits = step.next_logits(new)  # (B, V) on the first step, (B*k, V) after
        logp = F.log_softmax(logits.float(), dim=-1)
        if new is None:
            B, V = logp.shape
            device = logp.device
            stop_t = torch.tensor(stops, dtype=torch.long, device=device)
            # every row starts with k copies of its prompt, of which only the first is live: the
            # others' -inf keeps the same extension from filling the beam k times
            beam_logprob = torch.full((B, k), float("-inf"), device=device)  # (B, k) summed log-probs
            beam_logprob[:, 0] = 0.0
            beam_tokens = torch.zeros(B, k, 0, dtype=torch.long, device=device)  # (B, k, t)
            finished = _Finished(B, k, max_new_tokens, pad, device)
            done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
            # enough candidates that k of them do not end in a stop id (each beam has len(stops) that do)
            n_cand = min((1 + len(stops)) * k, k * V)
            logp = logp[:, None].expand(B, k, V)  # the one prompt row under all k beams
        else:
            if no_repeat_ngram_size:
                logp = logp + repeated_ngram_mask(beam_tokens.reshape(B * k, t), no_repeat_ngram_size, V)
            logp = logp.view(B, k, V)
        ext_logprob = (beam_logprob[:, :, None] + logp).view(B, k * V)  # (B, k*V): beam j, token v at j*V + v
        cand_logprob, flat = ext_logprob.topk(n_cand, dim=1)  # (B, C) best first
        origin, token = flat // V, flat % V  # (B, C): the beam extended, the token appended
        cand_tokens = torch.cat(
            (beam_tokens.gather(1, origin[:, :, None].expand(-1, -1, t)), token[:, :, None]), dim=2
        )  # (B, C, t+1)
        is_stop = torch.isin(token, stop_t)  # (B, C)

        # stop extensions among the step's top k finish (rows already done keep what they have)
        rank = torch.arange(n_cand, device=device)[None]  # (1, C)
        finishes = is_stop & (rank < k) & ~done[:, None] & (cand_logprob > float("-inf"))
        finished.add(torch.where(finishes, cand_logprob / length**length_penalty, float("-inf")), cand_tokens)

        # the k best extensions that do not stop live on: a stable sort puts them first, in rank order
        keep = torch.sort(is_stop.to(torch.uint8), dim=1, stable=True).indices[:, :k]  # (B, k)
        # (a stop extension kept only because fewer than k others exist is dead: -inf)
        beam_logprob = cand_logprob.gather(1, keep).masked_fill(is_stop.gather(1, keep), float("-inf"))  # (B, k)
        beam_tokens = cand_tokens.gather(1, keep[:, :, None].expand(-1, -1, length))  # (B, k, t+1)

        # done: k finished, the worst of which (the last: kept sorted) no live beam can beat. Log-probs
        # only fall as a beam grows; with length_penalty > 0 the divisor grows too, so the best a beam
        # can reach is its log-prob now over the longest length, else over its length now
        best_live = beam_logprob.max(dim=1).values  # (B,)
        reach = best_live / (max_new_tokens if length_penalty > 0 else length) ** length_penalty
        worst = finished.score[:, -1]  # (B,)
        done = done | ((worst > float("-inf")) & (worst >= reach))
        if bool(done.all()) or length == max_new_tokens:
            break
        rows = torch.arange(B, device=device)[:, None] * k + origin.gather(1, keep)  # (B, k) into B*k rows
        step.reorder((rows if t > 0 else rows // k).view(-1))  # on the first step the state has B rows
        new = beam_tokens[:, :, -1].reshape(B * k, 1)  # (B*k, 1)

    # rows still searching at the last step: their live beams compete at their length
    finished.add(torch.where(done[:, None], float("-inf"), beam_logprob / length**length_penalty), beam_tokens)
    n = int(finished.length[:, 0].max())
    return finished.tokens[:, 0, :n], finished.score[:, 0]


def repeated_ngram_mask(tokens: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(N, V): -inf at each token that would make row i's next n-gram one its `tokens` (N, t) hold, else 0."""
    N, t = tokens.shape
    mask = torch.zeros(N, vocab_size, device=tokens.device)
    if n < 1 or t < n:  # with fewer than n tokens no n-gram is complete yet
        return mask
    windows = tokens.unfold(1, n, 1)  # (N, t-n+1, n): every n-gram so far
    tail = tokens[:, t - n + 1 :]  # (N, n-1): the next n-gram starts with these
    hit = (windows[:, :, :-1] == tail[:, None, :]).all(dim=2)  # (N, W): n-grams that start the same way
    penalty = torch.where(hit, float("-inf"), 0.0)  # (N, W)
    # amin: a token banned by any matching n-gram stays banned, whatever the scatter order
    return mask.scatter_reduce(1, windows[:, :, -1], penalty, reduce="amin")


def _check_length(max_new_tokens: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")


class _Finished:
    """Each row's k best finished hypotheses, best first: score (B, k), tokens (B, k, L) padded, length (B, k).

    Empty slots score -inf.
    """

    def __init__(self, B: int, k: int, max_len: int, pad: int, device: torch.device) -> None:
        self.k, self.pad = k, pad
        self.score = torch.full((B, k), float("-inf"), device=device)
        self.tokens = torch.full((B, k, max_len), pad, dtype=torch.long, device=device)
        self.length = torch.zeros(B, k, dtype=torch.long, device=device)

    def add(self, score: torch.Tensor, tokens: torch.Tensor) -> None:
        """Offer hypotheses score (B, C), -inf for none, with tokens (B, C, t); keep the k best."""
        B, C, t = tokens.shape
        padded = F.pad(tokens, (0, self.tokens.size(2) - t), value=self.pad)  # (B, C, L)
        all_score = torch.cat((self.score, score), dim=1)  # (B, k + C)
        all_tokens = torch.cat((self.tokens, padded), dim=1)  # (B, k + C, L)
        all_length = torch.cat((self.length, torch.full_like(score, t, dtype=torch.long)), dim=1)  # (B, k + C)
        self.score, best = all_score.topk(self.k, dim=1)  # (B, k) sorted, best first
        self.tokens = all_tokens.gather(1, best[:, :, None].expand(-1, -1, all_tokens.size(2)))
        self.length = all_length.gather(1, best)
