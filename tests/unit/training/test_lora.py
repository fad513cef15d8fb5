"""LoRA adapters on the tiny presets of every family: what trains, what is saved, what merging gives."""

import copy
import pickle
from typing import Any

import pytest
import torch
import torch.nn as nn
from pydantic import ValidationError
from torch.utils.data import DataLoader, TensorDataset

from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FAMILIES, build_model
from llm_pipeline.models import SequenceClassifier
from llm_pipeline.models.base import FamilyModel
from llm_pipeline.training.lora import (
    DEFAULT_TARGET_MODULES,
    LoraConfig,
    LoraLinear,
    apply_lora,
    count_parameters,
    lora_state_dict,
    merge_lora,
)
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import CausalLM
from llm_pipeline.training.optim import OptimConfig, build_adamw
from llm_pipeline.training.trainer import TrainerConfig, build_trainer

VOCAB = 50
FAMILY_NAMES = list(FAMILIES)
ADAPTER_NAMES = ("lora_A", "lora_B")


def tiny(family: str, **overrides) -> FamilyModel:
    torch.manual_seed(0)
    length = {"gpt": {"block_size": 16}, "bert": {"max_position_embeddings": 16}}.get(family, {})
    return build_model(family, "tiny", VOCAB, **{**length, **overrides})


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randint(VOCAB, (2, 7), generator=torch.Generator().manual_seed(seed))


def logits(family: str, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The family's own forward: for T5 the decoder too, so cross-attention is exercised."""
    if family == "t5":
        return model(ids, ids.flip(1)).logits
    return model(ids).logits


def matched_linears(model: nn.Module, leaf_names=DEFAULT_TARGET_MODULES) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rpartition(".")[2] in leaf_names}


def is_adapter(name: str) -> bool:
    return name.rpartition(".")[2] in ADAPTER_NAMES


def randomize_adapters(model: nn.Module) -> None:
    """LoRA starts B at zero (a no-op update); a nonzero B makes merge checks meaningful."""
    torch.manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoraLinear):
                m.lora_B.normal_(std=0.1)


def test_config_defaults_and_validation():
    cfg = LoraConfig()
    assert (cfg.rank, cfg.alpha, cfg.dropout, cfg.target_modules) == (8, 16.0, 0.0, ["c_attn", "c_proj", "c_fc"])
    bad_fields: list[dict[str, Any]] = [
        {"rank": 0},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"target_modules": []},
        {"target_modules": ["", "c_attn"]},
        {"target_modules": ["mlp..c_fc"]},
    ]
    for bad in bad_fields:
        with pytest.raises(ValidationError):
            LoraConfig(**bad)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_only_adapters_train_and_their_count_follows_the_matched_shapes(family):
    model = tiny(family)
    rank = 4
    expected = sum(rank * (m.in_features + m.out_features) for m in matched_linears(model).values())
    total_before = count_parameters(model)["total"]
    adapted = apply_lora(model, LoraConfig(rank=rank))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(is_adapter(n) for n in trainable)
    # every matched Linear is wrapped once; T5's decoder also has cross-attention (4 Linears per block + 2)
    assert len(trainable) == 2 * len(matched_linears(tiny(family)))
    assert count_parameters(adapted) == {"trainable": expected, "total": total_before + expected}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_classifier_head_stays_trainable_beside_the_adapters(family):
    torch.manual_seed(0)
    clf = SequenceClassifier(tiny(family), num_labels=3)
    head = sum(p.numel() for p in clf.head.parameters())
    adapters = sum(2 * (m.in_features + m.out_features) for m in matched_linears(clf).values())
    apply_lora(clf, LoraConfig(rank=2), trainable=("head",))
    names = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= names and all(is_adapter(n) or n.startswith("head.") for n in names)
    assert count_parameters(clf)["trainable"] == adapters + head
    assert set(lora_state_dict(clf)) == names  # the adapter file: adapters + head, nothing else


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_optimizer_steps_change_only_adapters_and_every_adapter_gets_gradient(family):
    model = apply_lora(tiny(family), LoraConfig(rank=4, alpha=8))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_adamw(model, lr=1e-2, weight_decay=0.0, betas=(0.9, 0.95))
    ids = inputs()
    for _ in range(2):  # step 1 moves B off zero; only then does A get a gradient
        optimizer.zero_grad()
        logits(family, model, ids).logsumexp(-1).mean().backward()
        optimizer.step()
    for name, p in model.named_parameters():
        if is_adapter(name):
            assert not torch.equal(p, before[name]), f"{name} did not train"  # incl. T5's cross-attention c_attn
        else:
            assert p.grad is None and torch.equal(p, before[name]), f"base {name} changed"


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_adapter_file_is_small_and_loads_back(family, tmp_path):
    # wider than tiny: adapters grow with the width, the model with its square
    base = tiny(family, n_embd=128)
    torch.save(base.state_dict(), tmp_path / "full.pt")
    model = apply_lora(copy.deepcopy(base), LoraConfig(rank=2))
    randomize_adapters(model)
    torch.save(lora_state_dict(model), tmp_path / "adapter.pt")
    full, adapter = (tmp_path / "full.pt").stat().st_size, (tmp_path / "adapter.pt").stat().st_size
    assert adapter < 0.05 * full, (adapter, full)
    fresh = apply_lora(copy.deepcopy(base), LoraConfig(rank=2))
    missing, unexpected = fresh.load_state_dict(torch.load(tmp_path / "adapter.pt"), strict=False)
    assert not unexpected and all(not is_adapter(k) for k in missing)
    ids = inputs()
    with torch.no_grad():
        torch.testing.assert_close(logits(family, fresh.eval(), ids), logits(family, model.eval(), ids))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_merge_folds_the_update_into_plain_linears_with_the_same_outputs(family):
    base = tiny(family).eval()
    keys = list(base.state_dict())
    cfg = LoraConfig(rank=4, alpha=6)
    model = apply_lora(base, cfg)
    randomize_adapters(model)
    expected = {}
    for name, m in model.named_modules():
        if isinstance(m, LoraLinear):
            assert torch.count_nonzero(m.lora_A) and torch.count_nonzero(m.lora_B)
            delta = (cfg.alpha / cfg.rank) * m.lora_B @ m.lora_A
            expected[name] = (m.base.weight + delta).detach().clone()
    ids = inputs()
    with torch.no_grad():
        adapted = logits(family, model, ids)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert list(merged.state_dict()) == keys  # original names: checkpoint code loads it as a plain model
    assert type(merged) is type(tiny(family))
    for name, weight in expected.items():
        linear = merged.get_submodule(name)
        assert type(linear) is nn.Linear
        torch.testing.assert_close(linear.weight, weight, rtol=1e-6, atol=1e-6)
    assert all(p.requires_grad for p in merged.parameters())  # as before apply_lora
    with torch.no_grad():
        # T5: its cross-attention reads c_attn.weight directly; LoraLinear.weight carries the update there
        torch.testing.assert_close(logits(family, merged, ids), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_target_that_matches_nothing_names_it_in_one_line(family):
    model = tiny(family)
    with pytest.raises(PipelineError, match=r"lora.target_modules: 'xyz' matches no Linear module of") as err:
        apply_lora(model, LoraConfig(target_modules=["c_attn", "xyz"]))
    message = str(err.value)
    assert "\n" not in message and "c_attn" in message and type(model).__name__ in message
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen or wrapped
    assert not any(isinstance(m, LoraLinear) for m in model.modules())


def test_patterns_match_trailing_name_parts_with_wildcards():
    model = tiny("t5")
    apply_lora(model, LoraConfig(target_modules=["decoder.blocks.*.cross_attn.c_attn", "mlp.c_proj"]))
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert wrapped == {f"decoder.blocks.{i}.cross_attn.c_attn" for i in range(2)} | {
        f"{stack}.blocks.{i}.mlp.c_proj" for stack in ("encoder", "decoder") for i in range(2)
    }


def test_bad_trainable_prefix_tied_target_and_double_apply_are_refused():
    with pytest.raises(PipelineError, match=r"trainable: 'hed' matches no parameter of SequenceClassifier\(GPT\)"):
        apply_lora(SequenceClassifier(tiny("gpt"), 2), LoraConfig(), trainable=("hed",))
    with pytest.raises(PipelineError, match="lm_head shares its weight with transformer.wte"):
        apply_lora(tiny("gpt"), LoraConfig(target_modules=["lm_head"]))
    model = apply_lora(tiny("gpt"), LoraConfig())
    with pytest.raises(PipelineError, match="already has LoRA adapters"):
        apply_lora(model, LoraConfig())


def test_adapted_gpt_trains_in_the_lightning_module_and_pickles(tmp_path):
    model = apply_lora(tiny("gpt"), LoraConfig(rank=4, dropout=0.1))
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    torch.manual_seed(0)
    x = torch.randint(VOCAB, (16, 16))
    loader = DataLoader(TensorDataset(x, x.roll(-1, dims=1)), batch_size=4)
    module = TrainingModule(model, CausalLM(), OptimConfig(lr=1e-2, warmup_steps=1, max_steps=4))
    cfg = TrainerConfig(
        accelerator="cpu", devices=1, enable_progress_bar=False, log_every_n_steps=1, max_steps=4, val_check_interval=4
    )
    trainer = build_trainer(cfg, tmp_path)
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 4
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for n, p in model.named_parameters() if is_adapter(n)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base[name]), name
    clone = pickle.loads(pickle.dumps(model))
    ids = inputs()
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(ids).logits, model.eval()(ids).logits)
