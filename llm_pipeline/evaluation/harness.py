"""Run models over held-out data: LM perplexity, classifier predictions, sampled text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.blocks import IGNORE_INDEX as IGNORE
from llm_pipeline.training.objectives import Objective, token_cross_entropy


@torch.no_grad()
def compute_lm_perplexity(model: FamilyModel, tokens: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    """Perplexity of a causal LM over non-overlapping windows of its maximum length; also
    returns the targets scored, so a baseline can be scored on exactly the same tokens."""
    block = model.config.max_seq_len
    n_windows = (len(tokens) - 1) // block
    if n_windows == 0:
        raise ValueError(f"{len(tokens)} tokens: fewer than one window of {block + 1}")
    usable = np.asarray(tokens[: n_windows * block + 1], dtype=np.int64)
    x_all = torch.from_numpy(usable[:-1].reshape(n_windows, block))  # (N, T)
    y_all = torch.from_numpy(usable[1:].reshape(n_windows, block))  # (N, T)
    total_nll = 0.0
    for start in range(0, n_windows, batch_size):
        x, y = x_all[start : start + batch_size], y_all[start : start + batch_size]
        loss = token_cross_entropy(model(x).logits, y)  # mean over the batch's tokens
        total_nll += float(loss) * y.numel()
    return math.exp(total_nll / y_all.numel()), usable[1:]


@torch.no_grad()
def compute_target_loss(model: torch.nn.Module, objective: Objective, loader: Iterable) -> float:
    """Mean loss per target token over every batch of `loader` (token-weighted, as the objective
    weighs its `loss` metric): the teacher-forced loss a writer trains on."""
    total, weight = 0.0, 0
    for batch in loader:
        _, metrics = objective.compute(model, batch)
        mean, n = metrics["loss"]
        total += float(mean) * int(n)
        weight += int(n)
    if weight == 0:
        raise ValueError("no target tokens to score")
    return total / weight


class TextGenerator(Protocol):
    """A model that continues token ids (GPT.generate, T5.generate)."""

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        stop_ids: Sequence[int] = (),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


@torch.no_grad()
def generate_continuations(
    model: TextGenerator,
    tokenizer: Tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    eos_id: int,
    seed: int,
) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids])  # (1, T)
        out = model.generate(
            ids, max_new_tokens, temperature=temperature, top_k=top_k, stop_ids=(eos_id,), generator=generator
        )  # (1, n): new tokens only
        new = [t for t in out[0].tolist() if t != eos_id]
        samples.append({"prompt": prompt, "continuation": tokenizer.decode(new)})
    return samples


@torch.no_grad()
def compute_continuation_perplexity(
    model: FamilyModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int
) -> float:
    """Perplexity of each real continuation given its prompt, over continuation tokens only.

    A pair longer than the model's context loses tokens from the head of its prompt; keep
    continuations shorter than the context. Rows are right-padded: causality hides the pads.
    """
    block = model.config.max_seq_len
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        xs, ys = [], []
        for prompt, continuation in pairs[start : start + batch_size]:
            full = [*prompt, *continuation]
            labels = [IGNORE] * len(prompt) + list(continuation)  # the prompt is context, not scored
            xs.append(torch.tensor(full[:-1][-block:]))
            ys.append(torch.tensor(labels[1:][-block:]))
        x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True, padding_value=0)  # (B, T)
        y = torch.nn.utils.rnn.pad_sequence(ys, batch_first=True, padding_value=IGNORE)  # (B, T)
        n = int((y != IGNORE).sum())
        total_nll += float(token_cross_entropy(model(x).logits, y)) * n
        total_tokens += n
    return math.exp(total_nll / max(total_tokens, 1))
