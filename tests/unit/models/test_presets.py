import pytest
import torch

from llm_pipeline.errors import PipelineError
from llm_pipeline.models import (
    BERT, FAMILIES, GPT, T5, build_config, build_model, check_seq_len, model_from_config,
)


@pytest.mark.parametrize("family,cls", [("gpt", GPT), ("bert", BERT), ("t5", T5)])
def test_every_family_builds_from_a_preset_and_rebuilds_from_its_saved_config(family, cls):
    torch.manual_seed(0)
    model = build_model(family, "tiny", 30, dropout=0.1)
    assert isinstance(model, cls) and model.config.vocab_size == 30 and model.config.dropout == 0.1
    again = model_from_config(family, model.config.to_dict())
    again.load_state_dict(model.state_dict())
    assert again.config == model.config


def test_all_presets_are_valid_configs():
    for family, fam in FAMILIES.items():
        for preset in fam.presets:
            build_config(family, preset, 1000)  # raises on a bad preset


@pytest.mark.parametrize("family,known", [("gpt", "small-cpu-modern"), ("bert", "bert-base"), ("t5", "t5-small")])
def test_unknown_preset_lists_the_family_presets(family, known):
    with pytest.raises(PipelineError, match=f"unknown {family} model preset 'huge'.*{known}"):
        build_model(family, "huge", 30)


def test_unknown_family_and_bad_overrides_are_pipeline_errors():
    with pytest.raises(PipelineError, match="known families: gpt, bert, t5"):
        build_model("rnn", "tiny", 30)
    with pytest.raises(PipelineError, match="n_layers"):
        build_config("gpt", "tiny", 30, n_layers=3)  # typo of n_layer
    with pytest.raises(PipelineError, match="pos_embedding"):
        build_config("gpt", "tiny", 30, pos_embedding="alibi")
    with pytest.raises(PipelineError, match="only gpt has styles"):
        build_config("bert", "tiny", 30, style="modern")


def test_sequence_length_is_checked_against_the_config_before_training():
    gpt, bert, t5 = (build_config(f, "tiny", 30) for f in ("gpt", "bert", "t5"))
    check_seq_len(gpt, 64)
    with pytest.raises(PipelineError, match=r"data.seq_len 65 exceeds the model's maximum block_size=64"):
        check_seq_len(gpt, 65, what="data.seq_len")
    with pytest.raises(PipelineError, match="max_position_embeddings=64"):
        check_seq_len(bert, 65)
    check_seq_len(t5, 10_000)  # relative positions: no maximum


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_bf16_autocast_with_padding_stays_close_to_fp32(family):
    torch.manual_seed(0)
    model = build_model(family, "tiny", 30).eval()
    ids = torch.randint(30, (2, 8))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0

    def run():
        if family == "t5":
            return model(ids, mask, ids)[0]
        return model(ids, attention_mask=mask)[0]

    want = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    real = mask.bool()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[real].float(), want[real], atol=0.15 * want.abs().max().item(), rtol=0)
