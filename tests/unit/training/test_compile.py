"""torch.compile traces every training path: each family's pretraining objective and the two
fine-tuning shapes (a classifier head, prompted seq2seq). The loss and gradients of the compiled
model equal the eager ones. aot_eager traces forward and backward as inductor does without
generating code, so the test stays fast; `bench/train_step.py --compile` runs inductor itself."""

import copy

import pytest
import torch
import torch._dynamo

from llm_pipeline.families import build_model
from llm_pipeline.models.blocks import IGNORE_INDEX
from llm_pipeline.models.classifier import SequenceClassifier
from llm_pipeline.training.objectives import CausalLM, MaskedLMWithNSP, SequenceClassification, SpanCorruption

V, B, T = 64, 4, 16


def batches(case: str, g: torch.Generator):
    ids = lambda *shape: torch.randint(5, V, shape, generator=g)
    if case == "gpt-pretrain":
        x = ids(B, T + 1)
        return build_model("gpt", "tiny", V, block_size=32), CausalLM(), (x[:, :-1], x[:, 1:])
    if case == "bert-pretrain":
        labels = torch.full((B, T), IGNORE_INDEX).masked_scatter(torch.rand(B, T, generator=g) < 0.3, ids(B, T))
        mask = torch.ones(B, T, dtype=torch.long)
        mask[0, -3:] = 0  # padding on one row
        batch = {
            "input_ids": ids(B, T),
            "token_type_ids": (torch.arange(T) >= T // 2).long().expand(B, T),
            "attention_mask": mask,
            "mlm_labels": labels,
            "nsp_label": torch.randint(2, (B,), generator=g),
        }
        return build_model("bert", "tiny", V), MaskedLMWithNSP(), batch
    if case == "t5-pretrain":
        labels = ids(B, 6)
        batch = {
            "input_ids": ids(B, T),
            "attention_mask": torch.ones(B, T, dtype=torch.long),
            "decoder_input_ids": torch.cat([torch.zeros(B, 1, dtype=torch.long), labels[:, :-1]], 1),
            "labels": labels,
        }
        return build_model("t5", "tiny", V), SpanCorruption(), batch
    if case == "bert-classifier":
        lengths = torch.tensor([T, T - 2, T - 5, 3])
        model = SequenceClassifier(build_model("bert", "tiny", V), 3, dropout=0.0)  # no RNG: eager == compiled
        return model, SequenceClassification(), (ids(B, T), lengths, torch.randint(3, (B,), generator=g))
    # gpt-prompted: loss on the target only (IGNORE_INDEX over the prompt and the padding)
    x, y = ids(B, T), ids(B, T)
    y[:, : T // 2] = IGNORE_INDEX
    return build_model("gpt", "tiny", V, block_size=32), CausalLM(), (x, y)


@pytest.mark.parametrize("case", ["gpt-pretrain", "bert-pretrain", "t5-pretrain", "bert-classifier", "gpt-prompted"])
def test_compiled_training_step_equals_eager(case):
    torch.manual_seed(0)
    torch._dynamo.reset()
    eager, objective, batch = batches(case, torch.Generator().manual_seed(1))
    compiled = copy.deepcopy(eager)
    compiled.compile(backend="aot_eager")
    losses, grads = [], []
    for model in (eager, compiled):
        model.train()
        loss, _ = objective.compute(model, batch)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert torch.isfinite(losses[0]) and torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-6), name
