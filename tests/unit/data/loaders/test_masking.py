"""BERT masking statistics on many samples."""

import torch

from llm_pipeline.data.loaders.masking import IGNORE_INDEX, MaskingConfig, compute_mlm_masking

PAD, CLS, SEP, MASK = 0, 1, 2, 3
CFG = MaskingConfig(mask_id=MASK, vocab_size=100, special_ids=(PAD, CLS, SEP, MASK))


def sample_batch(rows=400, width=128, generator=None):
    """[CLS] ordinary... [SEP] then padding, ordinary ids in 4..99."""
    ids = torch.randint(4, 100, (rows, width), generator=generator)
    lengths = torch.randint(20, width, (rows,), generator=generator)
    ids[torch.arange(width) >= lengths[:, None]] = PAD
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    return ids


def test_masked_fraction_and_80_10_10_split():
    g = torch.Generator().manual_seed(0)
    ids = sample_batch(generator=g)
    corrupted, labels = compute_mlm_masking(ids, CFG, g)
    ordinary = ids >= 4
    picked = labels != IGNORE_INDEX
    assert abs(picked[ordinary].float().mean().item() - 0.15) < 0.01
    assert torch.equal(labels[picked], ids[picked])  # labels hold the originals
    n = picked.sum().item()
    masked = (corrupted[picked] == MASK).sum().item() / n
    kept = (corrupted[picked] == ids[picked]).sum().item() / n
    randomized = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(randomized - 0.1) < 0.02
    # a "random" replacement is an ordinary token (and coincides with the original ~1/96 of the time)
    assert (corrupted[picked & (corrupted != MASK)] >= 4).all()
    assert torch.equal(corrupted[~picked], ids[~picked])  # nothing else changes


def test_special_tokens_and_padding_never_masked():
    g = torch.Generator().manual_seed(1)
    ids = sample_batch(generator=g)
    greedy = MaskingConfig(MASK, 100, (PAD, CLS, SEP, MASK), mlm_probability=0.9)
    corrupted, labels = compute_mlm_masking(ids, greedy, g)
    special = ids < 4
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(corrupted[special], ids[special])
    assert (labels[~special] != IGNORE_INDEX).float().mean() > 0.85  # so the check above had something to refuse


def test_seeded_generator_reproduces_the_mask_and_leaves_input_alone():
    ids = sample_batch(rows=4)
    before = ids.clone()
    a = compute_mlm_masking(ids, CFG, torch.Generator().manual_seed(7))
    b = compute_mlm_masking(ids, CFG, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(ids, before)
