"""Our weights in Hugging Face's reference models give our logits (transformers: test-only dependency).

Every parity test first randomises EVERY parameter of our model (matrices, biases, norm gains
and biases, embeddings, BERT's heads and MLM bias, T5's relative position tables) at a scale
where attention is far from uniform, with dimensions drawn from the seed, so a converter that
drops, swaps or mis-slices any tensor changes the logits. The mutation tests prove it: one
parameter of ours perturbed after conversion must break the same parity check.
"""

from __future__ import annotations

import math
import random
from typing import Any, TypeVar, cast

import pytest
import torch
import torch.nn as nn

from llm_pipeline.families import build_model
from llm_pipeline.models import BERT, GPT, IGNORE_INDEX, T5
from llm_pipeline.models.attention import Attention
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.models.hf_convert import to_hf

pytest.importorskip("transformers")
# the reference classes load once, at collection, not inside the first test that converts
from transformers import BertForPreTraining, GPT2LMHeadModel, LlamaForCausalLM, T5ForConditionalGeneration  # noqa: F401

from llm_pipeline.training.objectives import token_cross_entropy

M = TypeVar("M", bound=nn.Module)
SEEDS = [0, 1, 2, 3]
TOL: dict[str, Any] = dict(atol=1e-4, rtol=0)
HF_IGNORE = -100
B, T = 3, 11  # batch rows and input length of every test batch
ATTN_GAIN = 1.8  # q/k/v weights ~ N(0, (ATTN_GAIN / sqrt(C))^2): std 0.32 at C = 32


# ---------------------------------------------------------------------------------------------
# randomised models and inputs


def randomize_(model: M, generator: torch.Generator) -> M:
    """Draw every parameter of `model` at random, in place.

    Norm gains U(0.5, 1.5); every 1-D non-gain tensor (Linear and LayerNorm biases, BERT's
    mlm_bias) N(0, 0.3); embeddings (words, positions, segments, T5's relative position bias)
    N(0, 1); q/k/v N(0, ATTN_GAIN^2 / C), the query also scaled by hs^-0.5 where attention is
    unscaled (T5), which keeps attention clearly peaked but not one-hot
    (test_randomised_attention_is_peaked_not_saturated); other matrices N(0, 1 / fan_in).
    A tied tensor is drawn once.
    """

    def normal(shape, std):
        return torch.randn(shape, generator=generator) * std

    with torch.no_grad():
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):  # LayerNorm / RMSNorm gain
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            elif p.dim() == 1:
                p.copy_(normal(p.shape, 0.3))
            elif id(p) in embeddings:
                p.copy_(normal(p.shape, 1.0))
            else:
                p.copy_(normal(p.shape, p.size(1) ** -0.5))
        for module in model.modules():
            if isinstance(module, Attention):
                w = module.c_attn.weight  # (3C, C): q, k, v
                C = w.size(1)
                w.copy_(normal(w.shape, ATTN_GAIN / math.sqrt(C)))
                if module.scale == 1.0:
                    w[:C] *= (C // module.n_head) ** -0.5
    return model


def _dims(seed: int) -> dict:
    """Tiny, seed-dependent shapes shared by the families (vocab_size: the registry's argument)."""
    rng = random.Random(seed)
    n_head = rng.choice([1, 2, 4])
    return dict(
        n_layer=rng.choice([1, 2, 3]),
        n_head=n_head,
        n_embd=n_head * rng.choice([8, 12, 16]),
        mlp_hidden=rng.choice([24, 40, 56, 72]),
        vocab_size=rng.randint(40, 100),
    )


def _build(family: str, preset: str, seed: int, fields: dict) -> FamilyModel:
    """Through the registry, every parameter then randomised."""
    fields = dict(fields)
    model = build_model(family, preset, fields.pop("vocab_size"), **fields)
    return randomize_(model, torch.Generator().manual_seed(seed)).eval()


def reference(model: nn.Module) -> Any:
    """The model's HF twin (Any: its config and generate are transformers')."""
    return to_hf(model).eval()


def _eps(rng: random.Random) -> float:
    return rng.choice([1e-6, 1e-3, 0.05])  # a large eps makes a dropped eps visible


def make_gpt(style: str, seed: int, **overrides) -> GPT:
    rng = random.Random(seed + 100)
    fields = {**_dims(seed), "block_size": 32, "norm_eps": _eps(rng)}
    if style == "gpt2":
        return cast(
            GPT, _build("gpt", "tiny", seed, {**fields, "mlp": rng.choice(["gelu", "gelu_tanh", "relu"]), **overrides})
        )
    fields["rope_base"] = rng.choice([10000.0, 100.0, 500.0])
    # the modern block both ways the registry offers: its preset, or the style override of a size
    preset, style_field = ("tiny-modern", {}) if seed % 2 == 0 else ("tiny", {"style": "modern"})
    return cast(GPT, _build("gpt", preset, seed, {**fields, **style_field, **overrides}))


def make_bert(seed: int, **overrides) -> BERT:
    rng = random.Random(seed + 200)
    fields = {
        **_dims(seed),
        "max_position_embeddings": 32,
        "norm_eps": _eps(rng),
        "type_vocab_size": rng.choice([2, 3]),
    }
    return cast(BERT, _build("bert", "tiny", seed, {**fields, **overrides}))


def make_t5(seed: int, **overrides) -> T5:
    rng = random.Random(seed + 300)
    buckets = rng.choice([8, 12, 16])  # max_distance must pass the exact buckets (num_buckets // 2)
    fields = {
        **_dims(seed),
        "n_decoder_layer": rng.choice([1, 2, 3]),
        "norm_eps": _eps(rng),
        "num_buckets": buckets,
        "max_distance": rng.choice([1, 2]) * buckets,
    }
    return cast(T5, _build("t5", "tiny", seed, {**fields, **overrides}))


def _ids(vocab: int, seed: int, shape=(B, T)) -> torch.Tensor:
    return torch.randint(vocab, shape, generator=torch.Generator().manual_seed(seed + 1000))


def left_padded_mask() -> torch.Tensor:
    """(B, T): row 0 has 4 left pads, row 1 one, row 2 none."""
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, :4], mask[1, :1] = 0, 0
    return mask


def mixed_padded_mask() -> torch.Tensor:
    """(B, T): row 0 right-padded (3), row 1 left-padded (2), row 2 unpadded."""
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, -3:], mask[1, :2] = 0, 0
    return mask


def hf_positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions counting real tokens, as HF's `generate` derives them (pads: 0)."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


# ---------------------------------------------------------------------------------------------
# parity checks (shared by the parity and the mutation tests)


def check_gpt(ours: GPT, ref: nn.Module, seed: int) -> None:
    """Logits at real positions of a left-padded batch, our DEFAULT positions vs the reference.

    HF's GPT2Model / LlamaModel forward does NOT derive positions from attention_mask (it uses
    arange(T) when position_ids is None); only HF's `generate` does. So the reference gets the
    positions explicitly (counting real tokens, as HF's generate would), while ours gets none
    and must derive the same ones from the mask.
    """
    ids, mask = _ids(ours.config.vocab_size, seed), left_padded_mask()
    with torch.no_grad():
        got = ours(ids, attention_mask=mask).logits
        want = ref(input_ids=ids, attention_mask=mask, position_ids=hf_positions(mask)).logits
        got_unpadded = ours(ids).logits
        want_unpadded = ref(input_ids=ids).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], **TOL)
    torch.testing.assert_close(got_unpadded, want_unpadded, **TOL)


def bert_inputs(model: BERT, seed: int) -> tuple[torch.Tensor, ...]:
    ids, mask = _ids(model.config.vocab_size, seed), mixed_padded_mask()
    types = _ids(model.config.type_vocab_size, seed + 1)
    picked = (torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.3) & mask.bool()
    picked[2, 5] = True  # at least one masked position
    return ids, types, mask, picked


def check_bert(ours: BERT, ref: nn.Module, seed: int) -> None:
    """MLM logits at every position (pads too: BERT's pad queries still read the real keys) and
    NSP logits; with mlm_positions, the logits of exactly the selected positions."""
    ids, types, mask, picked = bert_inputs(ours, seed)
    with torch.no_grad():
        full = ours(ids, types, mask)
        selected = ours(ids, types, mask, mlm_positions=picked)
        want = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    torch.testing.assert_close(full.logits, want.prediction_logits, **TOL)
    torch.testing.assert_close(full.sequence_logits, want.seq_relationship_logits, **TOL)
    torch.testing.assert_close(selected.logits, want.prediction_logits[picked], **TOL)
    torch.testing.assert_close(selected.sequence_logits, want.seq_relationship_logits, **TOL)


def t5_inputs(model: T5, seed: int) -> tuple[torch.Tensor, ...]:
    ids, mask = _ids(model.config.vocab_size, seed), mixed_padded_mask()
    labels = _ids(model.config.vocab_size, seed + 1, shape=(B, 7))
    labels[0, 4:] = IGNORE_INDEX  # right-padded target
    return ids, mask, labels


def t5_forward(model: T5, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
    return model(ids, model.shift_right(labels), mask)


def check_t5(ours: T5, ref: nn.Module, seed: int) -> None:
    """Logits at every target position (decoder inputs: our shift_right vs HF's own shift of the
    labels) and the loss from our token_cross_entropy vs HF's."""
    ids, mask, labels = t5_inputs(ours, seed)
    with torch.no_grad():
        logits = t5_forward(ours, ids, mask, labels).logits
        want = ref(input_ids=ids, attention_mask=mask, labels=labels.masked_fill(labels == IGNORE_INDEX, HF_IGNORE))
    torch.testing.assert_close(logits, want.logits, **TOL)
    torch.testing.assert_close(token_cross_entropy(logits, labels), want.loss, **TOL)


# ---------------------------------------------------------------------------------------------
# parity


@pytest.mark.parametrize("seed", SEEDS)
def test_gpt2_style_matches_gpt2lmheadmodel(seed):
    ours = make_gpt("gpt2", seed)
    ref = reference(ours)
    assert type(ref).__name__ == "GPT2LMHeadModel"
    check_gpt(ours, ref, seed)


def llama_reference(ours: GPT) -> nn.Module:
    ref = reference(ours)
    assert type(ref).__name__ == "LlamaForCausalLM"
    c = ref.config
    assert (c.num_key_value_heads, c.rms_norm_eps, c.rope_parameters["rope_theta"], c.tie_word_embeddings) == (
        ours.config.n_head,
        ours.config.norm_eps,
        ours.config.rope_base,
        True,
    )
    return ref


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_modern_matches_llamaforcausallm(seed, bias):
    ours = make_gpt("modern", seed, bias=bias)
    ref = llama_reference(ours)
    check_gpt(ours, ref, seed)


@pytest.mark.parametrize("style", ["gpt2", "modern"])
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_gpt_left_padded_greedy_generate_matches_hf(style, seed):
    """Neither side is given positions: HF's generate derives them from the mask, ours too."""
    ours = make_gpt(style, seed)
    ref = reference(ours)
    ids, mask = _ids(ours.config.vocab_size, seed), left_padded_mask()
    got = ours.generate(ids, 6, attention_mask=mask)
    want = ref.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.testing.assert_close(got, want[:, T:], rtol=0, atol=0)


def test_left_padded_check_bites_learned_positions():
    """The left-padded comparison tests our default position path: with positions 0..T-1 (what
    HF's forward uses unasked) the GPT-2 style logits of the left-padded row no longer match.
    (Not so for RoPE: shifting a whole row's positions by a constant leaves RoPE attention
    unchanged, so for the modern block the left-padded check tests the mask, not positions.)"""
    ours = make_gpt("gpt2", 0)
    ref = reference(ours)
    ids, mask = _ids(ours.config.vocab_size, 0), left_padded_mask()
    with torch.no_grad():
        naive = ours(ids, attention_mask=mask, position_ids=torch.arange(T)[None]).logits
        want = ref(input_ids=ids, attention_mask=mask, position_ids=hf_positions(mask)).logits
    real = mask[0].bool()
    assert (naive[0][real] - want[0][real]).abs().max() > 1e-2


@pytest.mark.parametrize("seed", SEEDS)
def test_bert_matches_bertforpretraining(seed):
    ours = make_bert(seed)
    check_bert(ours, reference(ours), seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_t5_matches_t5forconditionalgeneration(seed):
    ours = make_t5(seed)
    check_t5(ours, reference(ours), seed)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_t5_greedy_generate_matches_hf(seed):
    ours = make_t5(seed)
    ref = reference(ours)
    ids, mask, _ = t5_inputs(ours, seed)
    got = ours.generate(ids, 8, attention_mask=mask)
    uncached = ours.generate(ids, 8, attention_mask=mask, use_cache=False)
    want = ref.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=8,
        min_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
        use_cache=False,
    )  # HF's cache: IndexError with a deeper decoder
    torch.testing.assert_close(got, want[:, 1:], rtol=0, atol=0)  # HF's output starts with the start token
    torch.testing.assert_close(uncached, got, rtol=0, atol=0)


def test_randomised_attention_is_peaked_not_saturated(monkeypatch):
    """Under randomize_, every family's attention has clearly less entropy than uniform (so
    position and mask errors show), yet is not one-hot (so small perturbations still show)."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    ratios: list[torch.Tensor] = []

    def recording_sdpa(q, k, v, attn_mask=None, is_causal=False, dropout_p=0.0, scale=None, **kw):
        scores = q @ k.transpose(-2, -1) * (q.size(-1) ** -0.5 if scale is None else scale)  # (B, nh, T, S)
        allowed = torch.ones_like(scores, dtype=torch.bool)
        if is_causal:
            allowed = allowed & torch.ones(scores.shape[-2:], dtype=torch.bool).tril()
        if attn_mask is not None:
            allowed = allowed & (attn_mask > torch.finfo(scores.dtype).min / 2)
            scores = scores + attn_mask
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        entropy = -(probs * probs.clamp(min=1e-30).log()).sum(-1)  # (B, nh, T)
        n = allowed.sum(-1)
        ratios.append(entropy[n >= 4] / n[n >= 4].float().log())
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p, scale=scale, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    means = {}
    for seed in SEEDS:
        for family, build, run in (
            ("gpt2", lambda s: make_gpt("gpt2", s), lambda m, s: m(_ids(m.config.vocab_size, s))),
            ("modern", lambda s: make_gpt("modern", s), lambda m, s: m(_ids(m.config.vocab_size, s))),
            ("bert", make_bert, lambda m, s: m(*bert_inputs(m, s)[:3])),
            ("t5", make_t5, lambda m, s: t5_forward(m, *t5_inputs(m, s))),
        ):
            ratios.clear()
            with torch.no_grad():
                run(build(seed), seed)
            means[family, seed] = round(float(torch.cat(ratios).mean()), 2)
    assert all(0.1 < r < 0.7 for r in means.values()), means  # entropy / log(#keys); uniform = 1


@pytest.mark.parametrize(
    "mix",
    [
        dict(pos_embedding="rope"),
        dict(norm="rmsnorm"),
        dict(bias=False),
        dict(mlp="swiglu"),
        dict(style="modern", mlp="gelu"),
    ],
)
def test_gpt_blocks_without_a_twin_are_refused(mix):
    with pytest.raises(ValueError, match="has no transformers twin"):
        to_hf(build_model("gpt", "tiny", 16, **mix))


# ---------------------------------------------------------------------------------------------
# mutation: one wrong tensor must break the parity check


def mutate_(model: nn.Module, spec: str, generator: torch.Generator) -> None:
    """`name`: add N(0, 0.1) noise to that parameter; `name@halves`: swap its two row halves
    (SwiGLU's gate/value, i.e. gate_proj <-> up_proj); `name@qk` / `name@kv`: swap those thirds
    of a fused q/k/v tensor."""
    name, _, how = spec.partition("@")
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        if not how:
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
        elif how == "halves":
            a, b = p.chunk(2)
            p.copy_(torch.cat((b, a)))
        else:
            q, k, v = p.chunk(3)
            p.copy_(torch.cat((k, q, v) if how == "qk" else (q, v, k)))


GPT2_MUTATIONS = [
    "transformer.wte.weight",
    "transformer.wpe.weight",
    "transformer.h.0.ln_1.weight",
    "transformer.h.0.ln_1.bias",
    "transformer.h.1.ln_2.bias",
    "transformer.h.0.attn.c_attn.bias",
    "transformer.h.1.attn.c_attn.weight@kv",
    "transformer.h.0.attn.c_proj.bias",
    "transformer.h.1.mlp.c_fc.bias",
    "transformer.h.0.mlp.c_proj.bias",
    "transformer.ln_f.weight",
    "transformer.ln_f.bias",
]
MODERN_MUTATIONS = [
    "transformer.wte.weight",
    "transformer.h.0.ln_1.weight",
    "transformer.h.1.ln_2.weight",
    "transformer.h.0.attn.c_attn.weight@qk",
    "transformer.h.1.attn.c_attn.weight@kv",
    "transformer.h.0.attn.c_proj.weight",
    "transformer.h.0.mlp.c_fc.weight@halves",
    "transformer.h.1.mlp.c_proj.weight",
    "transformer.ln_f.weight",
]
BERT_MUTATIONS = [
    "embeddings.word.weight",
    "embeddings.position.weight",
    "embeddings.token_type.weight",
    "embeddings.norm.weight",
    "embeddings.norm.bias",
    "layers.0.attn.c_attn.bias",
    "layers.1.attn.c_attn.weight@qk",
    "layers.0.ln_1.bias",
    "layers.1.ln_2.weight",
    "layers.0.mlp.c_fc.bias",
    "layers.1.mlp.c_proj.bias",
    "mlm_transform.bias",
    "mlm_norm.weight",
    "mlm_norm.bias",
    "mlm_bias",
    "pooler.weight",
    "pooler.bias",
    "nsp_head.bias",
]
T5_MUTATIONS = [
    "shared.weight",
    "encoder.rel_bias.embedding.weight",
    "decoder.rel_bias.embedding.weight",
    "encoder.blocks.0.ln_1.weight",
    "encoder.blocks.1.attn.c_attn.weight@qk",
    "encoder.ln_f.weight",
    "decoder.blocks.0.ln_cross.weight",
    "decoder.blocks.0.cross_attn.c_attn.weight@kv",
    "decoder.blocks.1.cross_attn.c_proj.weight",
    "decoder.blocks.1.ln_2.weight",
    "decoder.blocks.0.mlp.c_fc.weight",
    "decoder.ln_f.weight",
]


def _assert_mutation_breaks(ours: nn.Module, check, spec: str, seed: int) -> None:
    ref = reference(ours)
    check(ours, ref, seed)  # unmutated: parity holds, so the failure below is the mutation's
    mutate_(ours, spec, torch.Generator().manual_seed(seed))
    with pytest.raises(AssertionError):
        check(ours, ref, seed)


@pytest.mark.parametrize("spec", GPT2_MUTATIONS)
def test_gpt2_check_catches_mutation(spec):
    _assert_mutation_breaks(make_gpt("gpt2", 0, n_layer=2), check_gpt, spec, 0)


@pytest.mark.parametrize("spec", MODERN_MUTATIONS)
def test_llama_check_catches_mutation(spec):
    _assert_mutation_breaks(make_gpt("modern", 1, n_layer=2), check_gpt, spec, 1)


@pytest.mark.parametrize("spec", BERT_MUTATIONS)
def test_bert_check_catches_mutation(spec):
    _assert_mutation_breaks(make_bert(2, n_layer=2), check_bert, spec, 2)


@pytest.mark.parametrize("spec", T5_MUTATIONS)
def test_t5_check_catches_mutation(spec):
    _assert_mutation_breaks(make_t5(3, n_layer=2, n_decoder_layer=2), check_t5, spec, 3)


# ---------------------------------------------------------------------------------------------


def test_models_never_import_transformers():
    """The models and even their conversion module load and run (forward and generate) without
    importing transformers. (Lightning's torchmetrics imports it opportunistically when
    installed; that is not a need.)"""
    import subprocess
    import sys

    code = (
        "import sys, torch, llm_pipeline.models.hf_convert\n"
        "from llm_pipeline.models import (BERT, BERT_PRESETS, GPT, GPT_PRESETS, T5, T5_PRESETS, BertConfig,\n"
        "                                 GPTConfig, T5Config)\n"
        "ids = torch.zeros(1, 4, dtype=torch.long)\n"
        "for preset in ('tiny', 'tiny-modern'):\n"
        "    gpt = GPT(GPTConfig(**GPT_PRESETS[preset], vocab_size=16))\n"
        "    gpt(ids).logits, gpt.generate(ids, 2)\n"
        "BERT(BertConfig(**BERT_PRESETS['tiny'], vocab_size=16))(ids).sequence_logits\n"
        "t5 = T5(T5Config(**T5_PRESETS['tiny'], vocab_size=16))\n"
        "t5(ids, t5.shift_right(ids)).logits, t5.generate(ids, 2)\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
