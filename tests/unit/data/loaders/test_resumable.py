import pytest
import torch

from llm_pipeline.data.loaders import resumable
from llm_pipeline.data.loaders.resumable import ResumableLoader
from llm_pipeline.errors import PipelineError


class Noisy:
    """A randomized dataset: item i is (i, a number drawn from the generator it is given)."""

    def __len__(self) -> int:
        return 30

    def item(self, index, generator):
        return torch.tensor([index, int(torch.randint(10**6, (1,), generator=generator))])


def epochs(loader, n):
    """n epochs read the way Lightning reads a sized loader: len(loader) batches, never exhausted."""
    out = []
    for _ in range(n):
        iterator = iter(loader)
        out.append([next(iterator) for _ in range(len(loader))])
    return out


def test_each_epoch_is_a_new_order_of_every_item_and_reruns_are_identical():
    first = epochs(ResumableLoader(Noisy(), batch_size=4, seed=5), 3)
    again = epochs(ResumableLoader(Noisy(), batch_size=4, seed=5), 3)
    assert all(torch.equal(a, b) for ea, eb in zip(first, again) for a, b in zip(ea, eb))
    orders = [torch.cat(epoch)[:, 0].tolist() for epoch in first]
    assert all(len(order) == 28 == len(set(order)) for order in orders)  # 7 full batches, no repeats
    assert orders[0] != orders[1] != orders[2]
    draws = [torch.cat(epoch)[:, 1].tolist() for epoch in first]
    assert draws[0] != draws[1]  # an item drawn again gets new randomness
    other_seed = epochs(ResumableLoader(Noisy(), batch_size=4, seed=6), 1)
    assert torch.cat(other_seed[0])[:, 0].tolist() != orders[0]


@pytest.mark.parametrize("stop_after", [0, 3, 7, 10])  # start, mid-epoch, an epoch's end, the next epoch
def test_a_loader_restored_from_state_continues_with_the_same_batches(stop_after):
    reference = [b for epoch in epochs(ResumableLoader(Noisy(), batch_size=4, seed=1), 3) for b in epoch]
    loader = ResumableLoader(Noisy(), batch_size=4, seed=1)
    seen = 0
    while seen < stop_after:  # read stop_after batches, across epochs as Lightning does
        iterator = iter(loader)
        for _ in range(min(len(loader), stop_after - seen)):
            next(iterator)
            seen += 1
    state = loader.state_dict()
    restored = ResumableLoader(Noisy(), batch_size=4, seed=1)
    restored.load_state_dict(state)
    rest = list(iter(restored))  # the rest of the epoch it stopped in (at an epoch's end: the next one)
    while len(rest) < len(reference) - stop_after:
        rest += list(iter(restored))
    assert len(rest) == len(reference) - stop_after
    assert all(torch.equal(a, b) for a, b in zip(rest, reference[stop_after:]))


def test_two_ranks_read_together_what_one_process_reads_at_twice_the_batch(monkeypatch):
    single = epochs(ResumableLoader(Noisy(), batch_size=6, seed=2), 2)
    ranks = []
    for rank in (0, 1):
        monkeypatch.setattr(resumable, "data_parallel_rank_and_size", lambda rank=rank: (rank, 2))
        ranks.append(epochs(ResumableLoader(Noisy(), batch_size=3, seed=2), 2))
    for epoch in range(2):
        for step, batch in enumerate(single[epoch]):
            together = torch.cat([ranks[0][epoch][step], ranks[1][epoch][step]])
            assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, batch.tolist()))


def test_resuming_with_another_world_size_or_batch_size_is_refused(monkeypatch):
    state = ResumableLoader(Noisy(), batch_size=4, seed=1).state_dict()
    with pytest.raises(PipelineError, match=r"batch_size 4 -> 5.*set resume: never"):
        ResumableLoader(Noisy(), batch_size=5, seed=1).load_state_dict(state)
    monkeypatch.setattr(resumable, "data_parallel_rank_and_size", lambda: (0, 2))
    with pytest.raises(PipelineError, match="world_size 1 -> 2"):
        ResumableLoader(Noisy(), batch_size=4, seed=1).load_state_dict(state)


def test_iterating_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epochs(ResumableLoader(Noisy(), batch_size=4, seed=1), 2)
    assert torch.equal(torch.rand(3), expected)
