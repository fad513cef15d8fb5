from typing import cast

import pytest
import torch

from llm_pipeline.errors import PipelineError
from llm_pipeline.families import get_family
from llm_pipeline.models import GPT, SequenceClassifier
from llm_pipeline.models.blocks import Block
from llm_pipeline.training.objectives import lengths_to_mask, token_cross_entropy

build_gpt_config = get_family("gpt").preset_config

VOCAB = 50


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(build_gpt_config("tiny", VOCAB, block_size=16)).eval()


def test_forward_returns_next_token_logits_near_uniform_at_init(model):
    idx = torch.randint(VOCAB, (3, 10))
    out = model(idx)
    assert out.logits.shape == (3, 10, VOCAB) and out.sequence_logits is None
    loss = token_cross_entropy(out.logits, idx)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(VOCAB)).item(), rel=0.2)


def test_lm_head_tied_to_token_embedding(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    wpe = model.transformer.wpe.weight.numel()
    assert model.num_parameters() - model.num_parameters(exclude_position_embedding=True) == wpe


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = GPT(build_gpt_config("tiny", VOCAB, n_layer=8, n_embd=64))
    block = cast(Block, model.transformer.h[0])
    proj = block.mlp.c_proj.weight.std().item()
    fc = block.mlp.c_fc.weight.std().item()
    assert proj == pytest.approx(0.02 / 4, rel=0.1) and fc == pytest.approx(0.02, rel=0.1)


def test_loss_ignores_index_minus_one(model):
    idx = torch.randint(VOCAB, (2, 8))
    targets = torch.randint(VOCAB, (2, 8))
    masked = targets.clone()
    masked[:, 4:] = -1
    logits = model(idx).logits
    loss = token_cross_entropy(logits, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, VOCAB), targets[:, :4].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_hidden_states_any_length_up_to_block_size(model):
    for T in (1, 5, 16):
        assert model.hidden_states(torch.zeros(2, T, dtype=torch.long)).shape == (2, T, 32)
    with pytest.raises(ValueError, match="block_size"):
        model.hidden_states(torch.zeros(1, 17, dtype=torch.long))


def test_generate_length_and_context_crop(model):
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), max_new_tokens=20, temperature=1.0, top_k=5)
    assert out.shape == (2, 20)  # 3 + 20 > block_size 16: context was cropped


def test_greedy_generation_is_deterministic(model):
    prompt = torch.randint(VOCAB, (1, 4))
    a = model.generate(prompt, 8)  # temperature 0 (the default) is greedy
    b = model.generate(prompt, 8, temperature=0)
    torch.testing.assert_close(a, b)
    # greedy means each new token is the argmax given its prefix
    logits = model(torch.cat((prompt, a), dim=1)[:, :-1]).logits
    torch.testing.assert_close(a, logits[:, 3:].argmax(-1))


def test_seeded_sampling_repeats(model):
    prompt = torch.randint(VOCAB, (2, 4))
    a = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    c = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, c)


def test_generate_stops_at_eos(model):
    prompt = torch.randint(VOCAB, (1, 4))
    eos = int(model.generate(prompt, 1)[0, -1])  # the first greedy token
    out = model.generate(prompt, 10, stop_ids=[eos])
    assert out.shape == (1, 1) and out[0, -1] == eos


def test_unknown_preset_lists_known_ones():
    with pytest.raises(PipelineError, match="small-cpu"):
        build_gpt_config("huge", VOCAB)


def test_classifier_shapes_and_padding_is_ignored(model):
    torch.manual_seed(0)
    clf = SequenceClassifier(model, num_labels=3).eval()
    ids = torch.randint(VOCAB, (2, 10))
    mask = lengths_to_mask(torch.tensor([6, 10]), 10)
    logits = clf(ids, mask).logits
    assert logits.shape == (2, 3)
    repadded = ids.clone()
    repadded[0, 6:] = 0  # different padding after the first text's end
    torch.testing.assert_close(clf(repadded, mask).logits, logits)
    # and the first row's logits equal classifying the unpadded text alone
    torch.testing.assert_close(clf(ids[:1, :6], mask[:1, :6]).logits, logits[:1])
    # left padding reads the same last real token
    left = torch.cat((torch.zeros(1, 4, dtype=torch.long), ids[:1, :6]), dim=1)
    left_mask = torch.cat((torch.zeros(1, 4, dtype=torch.long), mask[:1, :6]), dim=1)
    torch.testing.assert_close(clf(left, left_mask).logits, logits[:1], atol=1e-5, rtol=1e-5)


# --- block styles, KV cache, batched generation, sampling controls, length limit ---

STYLES = ["tiny", "tiny-modern"]


def _model(preset: str, **overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(build_gpt_config(preset, VOCAB, block_size=16, **overrides)).eval()


def test_modern_preset_uses_rope_rmsnorm_swiglu():
    model = _model("tiny-modern")
    block = cast(Block, model.transformer.h[0])
    assert "wpe" not in model.transformer and type(block.ln_1).__name__ == "RMSNorm"
    assert block.mlp.gated and block.mlp.c_fc.bias is None
    restyled = GPT(build_gpt_config("tiny", VOCAB, style="modern"))
    assert restyled.config == build_gpt_config("tiny-modern", VOCAB)


@pytest.mark.parametrize("preset", STYLES)
def test_causal_in_both_styles(preset):
    model = _model(preset)
    idx = torch.randint(VOCAB, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    a, b = model(idx).logits, model(changed).logits
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("preset", STYLES)
def test_cached_steps_give_full_forward_logits(preset):
    model = _model(preset)
    idx = torch.randint(VOCAB, (2, 12))
    full = model(idx).logits  # (B, T, V)
    cache = model.new_cache()
    steps = [model.lm_head(model.hidden_states(idx[:, :5], cache=cache))]  # a prompt, then one token at a time
    steps += [model.lm_head(model.hidden_states(idx[:, t : t + 1], cache=cache)) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", STYLES)
def test_chunks_of_several_tokens_over_a_cache_give_full_forward_logits(preset):
    model = _model(preset)
    idx = torch.randint(VOCAB, (2, 12))
    full = model(idx).logits  # (B, T, V)
    cache = model.new_cache()
    chunks = [model.lm_head(model.hidden_states(idx[:, a:b], cache=cache)) for a, b in ((0, 5), (5, 9), (9, 12))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", STYLES)
def test_kv_cache_generation_equals_no_cache(preset):
    model = _model(preset)
    prompt = torch.randint(VOCAB, (3, 5))
    # 20 new tokens run past block_size 16: the window slides and the cache is rebuilt
    cached = model.generate(prompt, 20)
    uncached = model.generate(prompt, 20, use_cache=False)
    torch.testing.assert_close(cached, uncached)
    seeded = [
        model.generate(prompt, 10, temperature=1.0, top_k=10, use_cache=c, generator=torch.Generator().manual_seed(3))
        for c in (True, False)
    ]
    torch.testing.assert_close(*seeded)


@pytest.mark.parametrize("preset", STYLES)
def test_left_padded_batch_generates_what_each_row_would_alone(preset):
    model = _model(preset)
    prompts = [torch.randint(1, VOCAB, (n,)) for n in (3, 6, 4)]
    width = max(len(p) for p in prompts)
    batch = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for row, p in enumerate(prompts):
        batch[row, width - len(p) :], mask[row, width - len(p) :] = p, 1
    out = model.generate(batch, 12, attention_mask=mask)  # 6 + 12 > 16: window slides too
    for row, p in enumerate(prompts):
        alone = model.generate(p[None], 12)
        torch.testing.assert_close(out[row], alone[0])


def test_stop_tokens_end_each_row_and_pad_with_the_first(model):
    prompt = torch.randint(VOCAB, (2, 4))
    free = model.generate(prompt, 10)
    stop = int(free[0, 3])  # a token row 0 generates anyway
    at = int((free[0] == stop).nonzero()[0])  # where row 0 first produces it
    out = model.generate(prompt, 10, stop_ids=[stop, VOCAB + 1])
    torch.testing.assert_close(out[0, : at + 1], free[0, : at + 1])
    assert (out[0, at:] == stop).all()  # after stopping, the row is padded with the first stop id
    both = model.generate(prompt, 10, stop_ids=free[:, 0].tolist())  # each row's first token
    assert both.shape == (2, 1)  # every row stopped at once: generation ended


def test_top_p_keeps_only_the_nucleus():
    from llm_pipeline.models.sampling import sample_next

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).expand(2000, 4)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_p=0.5, generator=gen).unique().tolist()) == {0}
    picks = sample_next(logits, top_p=0.85, generator=gen)
    assert set(picks.unique().tolist()) == {0, 1}
    assert (picks == 0).float().mean().item() == pytest.approx(0.6 / 0.9, abs=0.05)  # renormalised


def test_too_long_sequence_fails_before_running(model):
    from llm_pipeline.models import SequenceTooLongError

    with pytest.raises(PipelineError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    assert issubclass(SequenceTooLongError, ValueError)
