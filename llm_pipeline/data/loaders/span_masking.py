"""T5 span corruption, as t5.data.preprocessors.span_corruption does it.

A window of raw tokens is split into alternating non-noise / noise spans (it always starts
with non-noise). The input keeps the non-noise tokens and puts one sentinel in place of each
noise span; the target lists each sentinel followed by the span it stands for. Both end in
</s>. The last span is always noise, so the target never ends in a dangling sentinel. With
noise density 0.15 and mean span length 3:

    raw     a b c d e f g h i j
    noise       ^ ^           ^
    inputs  a b <X> e f g h i <Y> </s>
    targets <X> c d <Y> j </s>

Sentinel k is the id of `<extra_id_k>`, passed in as `sentinel_ids[k]`. The span counts are a
function of the window length alone, so equal-length windows give equal-length inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm_pipeline.errors import PipelineError


@dataclass(frozen=True)
class SpanCorruptionConfig:
    sentinel_ids: tuple[int, ...]  # id of <extra_id_0>, <extra_id_1>, ...
    eos_id: int
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0


def compute_span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for a window of `length` tokens (T5's rounding, at least one of each)."""
    length = max(length, 2)
    num_noise_tokens = min(max(int(round(length * noise_density)), 1), length - 1)
    num_noise_spans = max(int(round(num_noise_tokens / mean_noise_span_length)), 1)
    return num_noise_tokens, num_noise_spans


def compute_raw_length(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw window length, targets length) whose corrupted input is at most `inputs_length` long.

    T5's random_spans_helper: the longest window whose non-noise tokens + one sentinel per
    span + </s> fit. E.g. 512 -> (568, 114), 128 -> (141, 29).
    """

    def lengths(raw: int) -> tuple[int, int]:
        noise = int(round(raw * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return raw - noise + spans + 1, noise + spans + 1

    raw = inputs_length - 1
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    return raw, lengths(raw)[1]


def compute_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool (length,): True on noise tokens. t5 random_spans_noise_mask, in torch."""
    num_noise, num_spans = compute_span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)  # (S,)
    nonnoise_lengths = _random_segmentation(max(length, 2) - num_noise, num_spans, generator)  # (S,)
    # non-noise span 0, noise span 0, non-noise span 1, ...: the span index goes up at each start
    interleaved = torch.stack([nonnoise_lengths, noise_lengths], dim=1).reshape(-1)  # (2S,)
    span_index = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)  # (max(length, 2),)
    return (span_index % 2 == 1)[:length]


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> torch.Tensor:
    """Lengths (num_segments,) of a uniformly random split of num_items into non-empty segments."""
    # choose num_segments - 1 distinct cut points among the num_items - 1 gaps
    cuts = torch.randperm(num_items - 1, generator=generator)[: num_segments - 1].sort().values + 1
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([num_items])])
    return bounds.diff()


def apply_span_corruption(
    tokens: torch.Tensor, noise_mask: torch.Tensor, cfg: SpanCorruptionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (L,), noise_mask (L,) -> (inputs, targets), both ending in eos."""
    inputs = _replace_spans_with_sentinels(tokens, noise_mask, cfg.sentinel_ids)
    targets = _replace_spans_with_sentinels(tokens, ~noise_mask, cfg.sentinel_ids)
    eos = torch.tensor([cfg.eos_id], dtype=tokens.dtype)
    return torch.cat([inputs, eos]), torch.cat([targets, eos])


def _replace_spans_with_sentinels(
    tokens: torch.Tensor, span_mask: torch.Tensor, sentinel_ids: Sequence[int]
) -> torch.Tensor:
    """Each run of True in span_mask becomes one sentinel (the k-th run gets sentinel_ids[k])."""
    previous = torch.cat([torch.tensor([False]), span_mask[:-1]])
    starts = span_mask & ~previous  # (L,) first token of each span
    span_number = starts.cumsum(0) - 1  # (L,) which span a token belongs to
    if int(starts.sum()) > len(sentinel_ids):
        raise PipelineError(
            f"{int(starts.sum())} noise spans but only {len(sentinel_ids)} sentinel tokens "
            f"(<extra_id_*>) in the tokenizer"
        )
    sentinels = torch.tensor(list(sentinel_ids), dtype=tokens.dtype)
    out = torch.where(starts, sentinels[span_number.clamp(min=0, max=len(sentinel_ids) - 1)], tokens)
    return out[~(span_mask & ~starts)]  # drop the rest of each span


def corrupt_spans(
    tokens: torch.Tensor, cfg: SpanCorruptionConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (L,) -> (inputs, targets) with a fresh random noise mask."""
    mask = compute_noise_mask(len(tokens), cfg.noise_density, cfg.mean_noise_span_length, generator)
    return apply_span_corruption(tokens, mask, cfg)


def prefix_lm(
    tokens: torch.Tensor, eos_id: int, max_target: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (L,) -> (head + </s>, tail + </s>): the encoder reads a prefix, the decoder writes what
    follows (UL2's S-denoiser). The tail has 1..max_target tokens (uniform), the head the rest."""
    cut = int(torch.randint(1, max(2, min(max_target, len(tokens) - 1) + 1), (1,), generator=generator))
    eos = torch.tensor([eos_id], dtype=tokens.dtype)
    return torch.cat([tokens[:-cut], eos]), torch.cat([tokens[-cut:], eos])


def denoise(
    tokens: torch.Tensor, cfg: SpanCorruptionConfig, max_target: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (L,) -> (span-corrupted head + </s>, the whole head + </s>): the decoder rewrites its
    input with the gaps filled (BART's text infilling), which teaches it to copy from the encoder.
    The head is the first `max_target` tokens, so decoder sequences stay short."""
    head = tokens[:max_target]
    inputs, _ = corrupt_spans(head, cfg, generator)
    return inputs, torch.cat([head, torch.tensor([cfg.eos_id], dtype=tokens.dtype)])
