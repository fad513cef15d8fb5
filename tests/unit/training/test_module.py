"""Real Lightning Trainer runs on CPU with the tiny preset: a few seconds each."""

import functools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from llm_pipeline.config import build_config
from llm_pipeline.data.loaders.causal_lm import build_lm_dataloaders
from llm_pipeline.data.loaders.classification import TextClassificationDataset, collate_classification
from llm_pipeline.errors import PipelineError
from llm_pipeline.families import FAMILIES, build_model, get_family
from llm_pipeline.models import SequenceClassifier
from llm_pipeline.training.callbacks import LossCurveWriter
from llm_pipeline.training.module import TrainingModule
from llm_pipeline.training.objectives import CausalLM, SequenceClassification
from llm_pipeline.training.optim import OptimConfig
from llm_pipeline.training.trainer import TrainerConfig, build_trainer


def quick_trainer_config(**kw) -> TrainerConfig:
    base = dict(accelerator="cpu", devices=1, enable_progress_bar=False, log_every_n_steps=1)
    return TrainerConfig(**{**base, **kw})


def test_lm_module_learns_a_repeating_stream(tmp_path):
    torch.manual_seed(0)
    pattern = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7], dtype=np.uint16)
    np.tile(pattern, 300).tofile(tmp_path / "train.bin")
    np.tile(pattern, 20).tofile(tmp_path / "val.bin")
    train, val = build_lm_dataloaders(tmp_path, "uint16", block_size=32, batch_size=8, samples_per_epoch=160)
    gpt = get_family("gpt")
    config = gpt.preset_config("tiny", vocab_size=10, block_size=32)
    module = TrainingModule(gpt.model_cls(config), CausalLM(), OptimConfig(lr=3e-3, warmup_steps=5, max_steps=40))
    curves = LossCurveWriter(tmp_path / "train.tsv", tmp_path / "val.tsv", every_n_steps=10)
    trainer = build_trainer(quick_trainer_config(max_steps=40, val_check_interval=20), tmp_path, callbacks=[curves])
    before = trainer.validate(module, val, verbose=False)[0]["val/loss"]
    trainer.fit(module, train, val)
    after = trainer.callback_metrics
    assert after["val/loss"] < 0.5 * before
    assert after["val/ppl"] == pytest.approx(torch.exp(after["val/loss"]).item(), rel=1e-5)
    assert (tmp_path / "checkpoints" / "step-000040.ckpt").is_file()
    rows = (tmp_path / "train.tsv").read_text().splitlines()
    assert rows[0] == "step\ttrain_loss" and len(rows) == 41 and rows[-1].startswith("40\t")
    assert float(rows[-1].split("\t")[1]) < float(rows[1].split("\t")[1])
    val_rows = (tmp_path / "val.tsv").read_text().splitlines()
    assert val_rows[0].split("\t")[:2] == ["step", "val_loss"] and [r.split("\t")[0] for r in val_rows[1:]] == [
        "0",
        "20",
        "40",
    ]  # validate() before fit adds step 0
    reloaded = TrainingModule.load_from_checkpoint(
        tmp_path / "checkpoints" / "step-000040.ckpt", model=gpt.model_cls(config), objective=CausalLM()
    )
    for name, weight in module.model.state_dict().items():
        assert torch.equal(reloaded.model.state_dict()[name], weight), name


@pytest.mark.parametrize("family", list(FAMILIES))
def test_classification_objective_separates_a_toy_set_with_every_family(tmp_path, family):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # label 1 texts contain token 7 somewhere, label 0 texts never do
    texts, labels = [], []
    for i in range(200):
        ids = list(rng.integers(0, 7, size=rng.integers(3, 12)))
        if i % 2:
            ids[rng.integers(len(ids))] = 7
        texts.append(ids)
        labels.append(i % 2)
    collate = functools.partial(collate_classification, pad_id=0)
    ds = TextClassificationDataset(texts, labels, max_len=16)
    train = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate)
    val = DataLoader(ds, batch_size=50, collate_fn=collate)
    classifier = SequenceClassifier(build_model(family, "tiny", 8), 2)
    module = TrainingModule(classifier, SequenceClassification(), OptimConfig(lr=3e-3, warmup_steps=5, max_steps=100))
    trainer = build_trainer(quick_trainer_config(max_steps=100, val_check_interval=50), tmp_path)
    trainer.fit(module, train, val)
    assert trainer.callback_metrics["val/acc"] > 0.95
    assert "val/ppl" not in trainer.callback_metrics  # exp(label loss) means nothing


def test_trainer_config_rejects_unknown_keys():
    with pytest.raises(PipelineError, match="max_step"):
        build_config(TrainerConfig, {"max_step": 10})
