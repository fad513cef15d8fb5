"""The one token-by-token decoding loop behind every family's `generate`.

A family supplies `next_logits(new_ids)`: given the ids chosen at the last step (None on the
first), it returns the logits (B, V) for the next position, keeping whatever cache it likes.
The loop picks tokens (greedy at temperature 0, else sampling), stops rows that hit a stop id,
and returns only the new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from llm_pipeline.models.sampling import sample_next

NextLogits = Callable[[torch.Tensor | None], torch.Tensor]  # new ids (B, 1) or None -> logits (B, V)


def decode_tokens(
    next_logits: NextLogits,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """New token ids (B, n), n <= max_new_tokens.

    A row that produced any of `stop_ids` keeps it and is padded with the first stop id after
    it; the loop ends early once every row has stopped.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    new: torch.Tensor | None = None
    chosen: list[torch.Tensor] = []
    done: torch.Tensor | None = None  # (B,) rows that have stopped
    for _ in range(max_new_tokens):
        logits = next_logits(new)  # (B, V)
        new = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
        if stop_ids:
            stops = torch.tensor(list(stop_ids), dtype=new.dtype, device=new.device)
            if done is None:
                done = torch.zeros(new.size(0), dtype=torch.bool, device=new.device)
            new = torch.where(done[:, None], torch.full_like(new, stop_ids[0]), new)
            done = done | torch.isin(new[:, 0], stops)
        chosen.append(new)
        if done is not None and bool(done.all()):
            break
    return torch.cat(chosen, dim=1)
