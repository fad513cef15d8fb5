"""The engine's cross-cutting features: accumulation, validation/checkpoint cadence, throughput, compile."""

import json

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback

from llm_pipeline.data.loaders.causal_lm import build_lm_dataloaders
from llm_pipeline.families import build_model
from llm_pipeline.io import sha256_file
from llm_pipeline.models import IGNORE_INDEX, ModelOutput
from llm_pipeline.models.flops import compute_transformer_flops
from llm_pipeline.training.callbacks import CompileModel, LossCurveWriter
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import CausalLM, MaskedLMWithNSP
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.throughput import TokenThroughputMonitor, lookup_peak_flops, training_compute
from llm_pipeline.training.trainer import TrainerConfig, build_trainer


def callbacks_of(trainer: L.Trainer) -> list[Callback]:
    return trainer.callbacks  # type: ignore[attr-defined]  # Lightning sets it at run time, undeclared


def lm_setup(tmp_path, max_steps):
    pattern = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7], dtype=np.uint16)
    np.tile(pattern, 100).tofile(tmp_path / "train.bin")
    np.tile(pattern, 10).tofile(tmp_path / "val.bin")
    loaders = build_lm_dataloaders(tmp_path, "uint16", block_size=16, batch_size=4, samples_per_epoch=200)
    module = TrainingModule(
        build_model("gpt", "tiny", 10, block_size=16), CausalLM(), OptimConfig(warmup_steps=1, max_steps=max_steps)
    )
    return module, *loaders


def trainer_config(**kw):
    return TrainerConfig(
        **{
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "limit_val_batches": 2,
            **kw,
        }
    )


def test_steps_count_optimizer_steps_and_the_last_step_is_checkpointed(tmp_path):
    torch.manual_seed(0)
    module, train, val = lm_setup(tmp_path, max_steps=7)
    curves = LossCurveWriter(tmp_path / "train.tsv", tmp_path / "val.tsv")
    cfg = trainer_config(max_steps=7, accumulate_grad_batches=2, val_check_interval=3, checkpoint_every_n_steps=5)
    trainer = build_trainer(cfg, tmp_path, callbacks=[curves])
    trainer.fit(module, train, val)
    assert trainer.global_step == 7
    val_steps = [row.split("\t")[0] for row in (tmp_path / "val.tsv").read_text().splitlines()[1:]]
    assert val_steps == ["3", "6"]  # every 3 optimizer steps = 6 micro-batches
    assert len((tmp_path / "train.tsv").read_text().splitlines()) == 1 + 7
    folder = tmp_path / "checkpoints"
    saved = {p.name: torch.load(p, weights_only=True)["global_step"] for p in folder.glob("*.ckpt")}
    assert saved == {"step-000005.ckpt": 5, "step-000007.ckpt": 7}  # 7 is not a multiple of 5, and still saved
    listed = json.loads((folder / "checkpoints.json").read_text())["checkpoints"]
    assert {name: entry["step"] for name, entry in listed.items()} == saved
    assert all(entry["sha256"] == sha256_file(folder / name) for name, entry in listed.items())


def test_throughput_and_mfu_are_logged_from_the_model_flops(tmp_path):
    module, train, val = lm_setup(tmp_path, max_steps=4)
    trainer = build_trainer(trainer_config(max_steps=4, val_check_interval=4), tmp_path)
    monitor = next(cb for cb in callbacks_of(trainer) if isinstance(cb, TokenThroughputMonitor))
    monitor.peak_flops = 1e12  # as if on a device from the table
    trainer.fit(module, train, val)
    metrics = trainer.callback_metrics
    cfg = module.model.config
    flops_per_token = compute_transformer_flops(
        module.model.num_parameters(exclude_position_embedding=True), cfg.n_layer, cfg.n_embd, 16, 1
    )
    assert metrics["train/tokens_per_sec"] > 0
    assert float(metrics["train/mfu"]) * 1e12 / float(metrics["train/tokens_per_sec"]) == pytest.approx(
        flops_per_token, rel=1e-3
    )


def test_training_compute_sums_every_step_and_survives_a_resume(tmp_path):
    module, train, val = lm_setup(tmp_path, max_steps=6)
    trainer = build_trainer(trainer_config(max_steps=6, val_check_interval=3), tmp_path)
    trainer.fit(module, train, val)
    whole = training_compute(trainer)
    cfg = module.model.config
    flops_per_token = compute_transformer_flops(
        module.model.num_parameters(exclude_position_embedding=True), cfg.n_layer, cfg.n_embd, 16, 1
    )
    assert whole["train_tokens"] == 6 * 4 * 16  # 6 steps of 4 windows of 16 tokens, no padding
    assert whole["train_flops"] == pytest.approx(whole["train_tokens"] * flops_per_token, rel=1e-6)
    # resumed from the checkpoint saved mid-run at step 3: the totals of steps 1-3 travel in it
    resumed = build_trainer(trainer_config(max_steps=6, val_check_interval=3), tmp_path)
    resumed.fit(module, train, val, ckpt_path=str(tmp_path / "checkpoints" / "step-000003.ckpt"))
    assert training_compute(resumed) == whole
    assert training_compute(L.Trainer(logger=False, enable_checkpointing=False)) == {}


def test_peak_flops_table():
    assert lookup_peak_flops("NVIDIA H200") == lookup_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert lookup_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert lookup_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert lookup_peak_flops("Some CPU") is None
    # 6 per parameter per token + attention 12 * layers * width * context per token
    assert compute_transformer_flops(100, 2, 8, 16, tokens=10) == 10 * (600 + 12 * 2 * 8 * 16)


def test_compile_flag_compiles_the_loss_with_the_model(tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    module, train, val = lm_setup(tmp_path, max_steps=2)
    keys = set(module.model.state_dict())
    trainer = build_trainer(
        trainer_config(max_steps=2, val_check_interval=2), tmp_path, callbacks=[CompileModel(backend="eager")]
    )  # eager: no C++ toolchain, seconds
    torch._dynamo.reset()
    counters.clear()
    trainer.fit(module, train, val)
    assert module.compute_loss != module.objective_loss  # the steps call the compiled loss...
    assert counters["frames"]["ok"] > 0  # ...and dynamo traced it
    assert set(module.model.state_dict()) == keys  # no _orig_mod. prefix in checkpoints
    assert any(
        isinstance(cb, CompileModel) for cb in callbacks_of(build_trainer(trainer_config(compile=True), tmp_path))
    )


class FixedBert(nn.Module):
    """Returns given logits, whatever the input."""

    def __init__(self, mlm_logits, nsp_logits):
        super().__init__()
        self.mlm_logits, self.nsp_logits = mlm_logits, nsp_logits

    def forward(self, input_ids, token_type_ids, attention_mask, mlm_positions=None):
        logits = self.mlm_logits if mlm_positions is None else self.mlm_logits[mlm_positions]
        return ModelOutput(logits, sequence_logits=self.nsp_logits)


def test_mlm_nsp_objective_scores_only_masked_positions():
    mlm_logits = torch.randn(2, 3, 5)
    nsp_logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # predicts class 0 for both pairs
    labels = torch.full((2, 3), IGNORE_INDEX)
    labels[0, 1], labels[1, 2] = 4, int(mlm_logits[1, 2].argmax())  # the second is predicted right
    batch = {
        "input_ids": torch.zeros(2, 3, dtype=torch.long),
        "token_type_ids": torch.zeros(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "mlm_labels": labels,
        "nsp_label": torch.tensor([0, 1]),
    }
    loss, metrics = MaskedLMWithNSP().compute(FixedBert(mlm_logits, nsp_logits), batch)
    expected_mlm = nn.functional.cross_entropy(mlm_logits[[0, 1], [1, 2]], torch.tensor([4, labels[1, 2]]))
    expected_nsp = nn.functional.cross_entropy(nsp_logits, torch.tensor([0, 1]))
    assert metrics["mlm_loss"][0] == pytest.approx(expected_mlm.item()) and int(metrics["mlm_loss"][1]) == 2
    assert loss == pytest.approx((expected_mlm + expected_nsp).item())
    assert metrics["nsp_acc"][0] == 0.5 and metrics["nsp_acc"][1] == 2
    assert metrics["mlm_acc"][0] == (0.5 if int(mlm_logits[0, 1].argmax()) != 4 else 1.0)
