"""BERT learns next-sentence prediction end to end: pairs -> NSPDataset/collate_nsp -> BERT -> MaskedLMWithNSP.

A synthetic pair task that only the relation between the segments solves: every segment is a few
tokens of one of K topics (topics uniform for A and for B), IsNext pairs share a topic, NotNext
pairs do not. Either segment alone says nothing (chance); the two together say everything. A tiny
BERT trained with the pipeline's loader, objective and optimizer must get held-out pairs right,
so the NSP labels have to line up with their pairs, the head has to read a state that sees both
segments, and the NSP gradient has to reach the encoder next to the MLM loss.
"""

import functools

import torch
from torch.utils.data import DataLoader

from llm_pipeline.data.loaders.masking import MaskingConfig
from llm_pipeline.data.loaders.mlm_nsp import BertSpecialIds, NSPDataset, collate_nsp
from llm_pipeline.families import build_model
from llm_pipeline.training.objectives import MaskedLMWithNSP
from llm_pipeline.training.optim import build_adamw

SPECIAL = BertSpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
TOPICS, WORDS_PER_TOPIC = 4, 6  # ordinary ids 5.. : topic t owns 5 + t*6 .. 5 + t*6 + 5
VOCAB = 5 + TOPICS * WORDS_PER_TOPIC


def topic_pairs(n: int, generator: torch.Generator) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """n (a, b) pairs of 3-6 tokens each and their is_next flags (1: b shares a's topic)."""

    def draw(high: int, low: int = 0) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    def segment(topic: int) -> list[int]:
        start = 5 + topic * WORDS_PER_TOPIC
        return [start + draw(WORDS_PER_TOPIC) for _ in range(draw(7, low=3))]

    pairs, is_next = [], []
    for _ in range(n):
        topic_a, follows = draw(TOPICS), draw(2)
        topic_b = topic_a if follows else (topic_a + 1 + draw(TOPICS - 1)) % TOPICS
        pairs.append((segment(topic_a), segment(topic_b)))
        is_next.append(follows)
    return pairs, is_next


def test_tiny_bert_learns_nsp_from_both_segments():
    generator = torch.Generator().manual_seed(0)
    masking = MaskingConfig(SPECIAL.mask, VOCAB, (0, 1, 2, 3, 4), mlm_probability=0.15)
    train = NSPDataset(*topic_pairs(2000, generator), SPECIAL, masking, max_len=16)
    held_out = NSPDataset(*topic_pairs(256, generator), SPECIAL, masking, max_len=16, seed=0)
    collate = functools.partial(collate_nsp, pad_id=SPECIAL.pad)
    torch.manual_seed(0)
    model = build_model("bert", "tiny", VOCAB, max_position_embeddings=16)
    objective = MaskedLMWithNSP()
    optimizer = build_adamw(model, lr=2e-3, weight_decay=0.01, betas=(0.9, 0.999))
    loader = DataLoader(train, batch_size=32, shuffle=True, drop_last=True, collate_fn=collate)

    def held_out_metrics() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            _, metrics = objective.compute(model, collate([held_out[i] for i in range(len(held_out))]))
        model.train()
        return {name: float(value) for name, (value, _) in metrics.items()}

    assert held_out_metrics()["nsp_acc"] < 0.7  # nothing known before training
    for _ in range(7):  # 7 epochs of 62 batches: ~430 steps, a few seconds
        for batch in loader:
            loss, _ = objective.compute(model, batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    metrics = held_out_metrics()
    assert metrics["nsp_acc"] > 0.9, metrics
    assert metrics["nsp_loss"] < 0.3, metrics
