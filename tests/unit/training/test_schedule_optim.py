import copy

import pytest
import torch

from llm_pipeline.families import build_model
from llm_pipeline.training.optim import OptimConfig, build_adamw, build_optimizer, build_optimizers
from llm_pipeline.training.schedule import warmup_cosine, warmup_stable_decay


def test_warmup_cosine_values():
    f = lambda s: warmup_cosine(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert 0 < f(0) < f(5) < f(9) < 1.0
    assert f(10) == pytest.approx(1.0)  # peak right after warmup
    assert f(60) == pytest.approx(0.55)  # halfway down the cosine: (1 + 0.1) / 2
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_no_weight_decay_on_biases_norms_embeddings():
    model = build_model("gpt", "tiny", 40)
    decay, no_decay = build_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95)).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert "transformer.h.0.attn.c_attn.weight" in decayed and "transformer.h.1.mlp.c_proj.weight" in decayed
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= not_decayed
    assert "transformer.h.0.attn.c_attn.bias" in not_decayed
    assert all(p.ndim == 2 for p in decay["params"])
    assert len(decayed) + len(not_decayed) == len(list(model.parameters()))  # every param exactly once


def test_scheduler_steps_the_learning_rate():
    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(lr=1.0, warmup_steps=2, max_steps=4, min_lr_ratio=0.0)
    built = build_optimizers(model, cfg)
    scheduling = built["lr_scheduler"]
    assert isinstance(scheduling, dict)  # a scheduler config, not a bare scheduler
    opt, sched = built["optimizer"], scheduling["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5, 0.0])
    assert scheduling["interval"] == "step"


def test_warmup_stable_decay_values():
    f = lambda s: warmup_stable_decay(s, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, decay_steps=20)
    assert 0 < f(0) < f(9) < 1.0
    assert f(10) == f(50) == f(89) == 1.0  # the plateau
    assert f(90) == 1.0 and f(100) == pytest.approx(0.55) and f(109) < f(100)  # linear decay
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_optim_config_selects_the_schedule():
    model = torch.nn.Linear(2, 2)
    built = build_optimizers(
        model, OptimConfig(lr=1.0, warmup_steps=0, max_steps=10, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.5)
    )
    scheduling = built["lr_scheduler"]
    assert isinstance(scheduling, dict)  # a scheduler config, not a bare scheduler
    opt, sched = built["optimizer"], scheduling["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0] * 5 + [1.0, 0.8, 0.6, 0.4, 0.2])


def test_no_weight_decay_on_rmsnorm_of_the_modern_block():
    model = build_model("gpt", "tiny-modern", 40)
    decay, no_decay = build_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95)).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    norms = {n for n, p in model.named_parameters() if p.ndim == 1}
    assert norms and norms <= {names[id(p)] for p in no_decay["params"]}
    assert all(p.ndim == 2 for p in decay["params"])


def test_adafactor_steps_scale_with_the_parameter_rms():
    """Why T5 trains with it: AdamW moves every weight by ~lr a step, so T5's std-1 tied
    embedding (the LM head too) changes ~14x slower, relative to its size, than its 1/sqrt(C)
    matrices; Adafactor's relative step moves each by lr times its own RMS."""
    torch.manual_seed(0)
    embedding, linear = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 16, bias=False)
    torch.nn.init.normal_(embedding.weight, std=1.0)
    torch.nn.init.normal_(linear.weight, std=0.05)
    model = torch.nn.Sequential(embedding, linear)
    built = build_optimizers(
        model, OptimConfig(name="adafactor", lr=0.01, weight_decay=0.0, warmup_steps=0, max_steps=10)
    )
    optimizer = built["optimizer"]
    assert isinstance(optimizer, torch.optim.Adafactor)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0]
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.arange(50)).square().mean().backward()
    optimizer.step()
    relative = [((p - b).norm() / b.norm()).item() for p, b in zip(model.parameters(), before)]
    assert relative[0] > 0 and relative[0] == pytest.approx(relative[1], rel=0.5)
    adamw = build_optimizers(model, OptimConfig(lr=0.01, weight_decay=0.0, warmup_steps=0, max_steps=10))["optimizer"]
    assert isinstance(adamw, torch.optim.AdamW)
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    model(torch.arange(50)).square().mean().backward()
    adamw.step()
    relative = [((p - b).norm() / b.norm()).item() for p, b in zip(model.parameters(), before)]
    assert relative[1] > 5 * relative[0]  # the small matrix moves far more, relative to its size


def test_adafactor_without_relative_step_moves_every_parameter_alike():
    """T5's fine-tuning recipe (relative_step: false): the step no longer scales with the
    parameter's RMS, so a fused q/k/v matrix's one RMS does not set all three's step."""
    torch.manual_seed(0)
    small, big = torch.nn.Linear(16, 16, bias=False), torch.nn.Linear(16, 16, bias=False)
    big.weight.data = small.weight.data * 10  # the same direction, ten times the RMS
    grad = torch.randn(16, 16)
    deltas = {}
    for relative in (True, False):
        for name, layer in (("small", small), ("big", big)):
            layer = copy.deepcopy(layer)
            cfg = OptimConfig(name="adafactor", lr=1e-3, weight_decay=0.1, relative_step=relative)
            optimizer = build_optimizer(layer, cfg)
            before = layer.weight.detach().clone()
            layer.weight.grad = grad.clone()
            optimizer.step()
            deltas[relative, name] = (layer.weight.detach() - before).abs().mean().item()
    assert deltas[True, "big"] / deltas[True, "small"] == pytest.approx(10, rel=0.01)
    assert deltas[False, "big"] / deltas[False, "small"] == pytest.approx(1, rel=0.05)  # decay: lr * 0.1 * w
    assert 3e-4 < deltas[False, "small"] < 3e-3  # lr times a normalised update of RMS ~1
