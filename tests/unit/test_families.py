"""The family registry: every family builds from its presets, rebuilds from a saved config,
classifies through one head, counts its FLOPs, and no code outside the registry names a family."""

import ast
from pathlib import Path

import pytest
import torch

from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FAMILIES, build_model, family_of, get_family
from llm_pipeline.models import BERT, GPT, T5, SequenceClassifier, check_config_seq_len

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("family", "cls"), [("gpt", GPT), ("bert", BERT), ("t5", T5)])
def test_every_family_builds_from_a_preset_and_rebuilds_from_its_saved_config(family, cls):
    torch.manual_seed(0)
    model = build_model(family, "tiny", 30, dropout=0.1)
    assert isinstance(model, cls) and model.config.vocab_size == 30 and model.config.dropout == 0.1
    assert family_of(model).name == family
    again = get_family(family).model_from_config(model.config.to_dict())
    again.load_state_dict(model.state_dict())
    assert again.config == model.config


def test_all_presets_are_valid_configs():
    for spec in FAMILIES.values():
        for preset in spec.presets:
            spec.preset_config(preset, 1000)  # raises on a bad preset


@pytest.mark.parametrize(("family", "known"), [("gpt", "small-cpu-modern"), ("bert", "bert-base"), ("t5", "t5-small")])
def test_unknown_preset_lists_the_family_presets(family, known):
    with pytest.raises(PipelineError, match=f"unknown {family} model preset 'huge'.*{known}"):
        build_model(family, "huge", 30)


def test_unknown_family_bad_overrides_and_bad_saved_configs_are_pipeline_errors():
    with pytest.raises(PipelineError, match="known families: gpt, bert, t5"):
        build_model("rnn", "tiny", 30)
    gpt = get_family("gpt")
    with pytest.raises(PipelineError, match="n_layers"):
        gpt.preset_config("tiny", 30, n_layers=3)  # typo of n_layer
    with pytest.raises(PipelineError, match="pos_embedding"):
        gpt.preset_config("tiny", 30, pos_embedding="alibi")
    with pytest.raises(PipelineError, match="'modern' is not a bert style"):
        get_family("bert").preset_config("tiny", 30, style="modern")
    saved = gpt.preset_config("tiny", 30).to_dict() | {"n_experts": 4}
    with pytest.raises(PipelineError, match="model.pt: not a valid gpt config.*n_experts"):
        gpt.model_from_config(saved, where="model.pt")


def test_modern_style_swaps_the_block_of_any_size():
    gpt = get_family("gpt")
    assert gpt.preset_config("tiny", 30, style="modern") == gpt.preset_config("tiny-modern", 30)


def test_sequence_length_is_checked_against_the_config_before_training():
    gpt, bert, t5 = (get_family(f).preset_config("tiny", 30) for f in ("gpt", "bert", "t5"))
    check_config_seq_len(gpt, 64)
    with pytest.raises(PipelineError, match=r"data.seq_len 65 exceeds the model's maximum block_size=64"):
        check_config_seq_len(gpt, 65, what="data.seq_len")
    with pytest.raises(PipelineError, match="max_position_embeddings=64"):
        check_config_seq_len(bert, 65)
    check_config_seq_len(t5, 10_000)  # relative positions: no maximum
    assert get_family("t5").seq_len(t5, None) == 128 and get_family("gpt").seq_len(gpt, None) == 64
    assert get_family("gpt").seq_len(gpt, 32) == 32


def _forward(model, ids, mask):
    if isinstance(model, T5):
        return model(ids, ids, mask).logits
    return model(ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_autocast_with_padding_stays_close_to_fp32(family):
    torch.manual_seed(0)
    model = build_model(family, "tiny", 30).eval()
    ids = torch.randint(30, (2, 8))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    want = _forward(model, ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _forward(model, ids, mask)
    real = mask.bool()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[real].float(), want[real], atol=0.15 * want.abs().max().item(), rtol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_classifies_and_ignores_trailing_padding(family):
    torch.manual_seed(0)
    clf = SequenceClassifier(build_model(family, "tiny", 30), num_labels=3).eval()
    ids = torch.randint(1, 30, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    logits = clf(ids, mask).logits
    assert logits.shape == (2, 3)
    repadded = ids.clone()
    repadded[0, 6:] = 7  # other ids under the padding
    torch.testing.assert_close(clf(repadded, mask).logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clf(ids[:1, :6], mask[:1, :6]).logits, logits[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_models_count_their_flops_from_parameters_and_attention(family):
    model = build_model(family, "tiny", 30)
    c = model.config
    one = model.count_flops(100, 16, 50, 8)
    assert model.count_flops(200, 16, 100, 8) == pytest.approx(2 * one)  # linear in tokens
    n_params = sum(p.numel() for p in model.parameters())
    # 6 FLOPs per parameter per token is the bulk; attention adds 12 * layers * width * length per token
    if family == "t5":
        assert one > 6 * n_params * 50  # every parameter touches at least the target tokens
    else:
        positions = c.max_seq_len * c.n_embd
        assert one == pytest.approx(100 * (6 * (n_params - positions) + 12 * c.n_layer * c.n_embd * 16))


def test_no_code_outside_the_registry_names_a_family():
    """Adding a family touches its registry entry and its own files: no other module spells a family name."""
    names = set(FAMILIES)
    offenders = []
    for path in sorted([*(ROOT / "llm_pipeline").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        if path == ROOT / "llm_pipeline" / "families.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders
