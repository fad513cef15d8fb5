"""Training loaders that resume exactly where a killed run stopped, without replaying data.

Every random choice of a training example (its place in the epoch's order, a GPT window's
jitter, BERT's masks, T5's noise spans) is a function of (seed, epoch, position in the epoch),
never of a global RNG. So a loader's whole state is two integers, the epoch and the number of
samples the epoch has consumed, and resuming starts the epoch's order at that position: no
batch is read to be skipped, and nothing depends on what else drew from torch's RNG (Lightning,
validation, a DataLoader iterator's own seed draw).

The sampler shards itself across data-parallel ranks (rank r takes positions r, r+W, r+2W, ...
of the one epoch order), so a W-process run with batch B reads, step for step, the samples a
1-process run with batch W*B reads. Lightning must not swap in its DistributedSampler
(the trainer sets use_distributed_sampler=False).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from llm_pipeline.errors import PipelineError


class Draw(NamedTuple):
    """What the training sampler yields: the dataset index, and the seed of this use of it."""

    dataset_index: int
    seed: int


class RandomizedDataset(Protocol):
    """A dataset whose training items are random (jitter, masks): `item` draws only from `generator`."""

    def __len__(self) -> int: ...

    def item(self, index: int, generator: torch.Generator) -> Any: ...


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers; nearby inputs give unrelated seeds (unlike seed + index)."""
    digest = hashlib.blake2b(b",".join(str(p).encode() for p in parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def data_parallel_rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DrawDataset(Dataset):
    """Serves Draws: a randomized dataset gets a generator seeded from the draw; a plain one the index."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, draw: Draw) -> Any:
        if hasattr(self.base, "item"):
            return self.base.item(draw.dataset_index, torch.Generator().manual_seed(draw.seed))
        return self.base[draw.dataset_index]


class ResumableSampler(Sampler[Draw]):
    """Epoch orders from (seed, epoch); sharded over ranks; starts an epoch at any position.

    Per epoch each rank gets `steps_per_epoch * batch_size` draws, the same count on every rank
    (the tail that would not fill a batch on every rank is dropped, as drop_last does).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.num_items, self.batch_size, self.seed, self.shuffle = num_items, batch_size, seed, shuffle
        self.epoch = 0
        self.start = 0  # samples of this epoch consumed, over all ranks

    def steps_per_epoch(self, world_size: int) -> int:
        return self.num_items // (world_size * self.batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch(data_parallel_rank_and_size()[1]) * self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of dataset indices (num_items,), the same on every rank."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[Draw]:
        rank, world = data_parallel_rank_and_size()
        order = self.order(self.epoch)
        end = self.steps_per_epoch(world) * self.batch_size * world
        for position in range(self.start + rank, end, world):
            yield Draw(int(order[position]), mix_seed(self.seed, self.epoch, position))


class ResumableLoader(DataLoader):
    """A training DataLoader with the state_dict/load_state_dict Lightning saves in its checkpoints.

    It counts the batches it has handed out (not the indices its workers fetched ahead), so the
    state at a checkpoint is the position of the next batch the training step will see.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        seed: int,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
    ) -> None:
        sampler = ResumableSampler(len(dataset), batch_size, seed, shuffle)
        super().__init__(
            DrawDataset(dataset),
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            collate_fn=collate_fn,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            # its own generator: iterating must not draw from torch's global RNG (see the module doc)
            generator=torch.Generator().manual_seed(seed),
        )
        self.resumable_sampler = sampler
        self.batch = batch_size  # DataLoader.batch_size is Optional; this one is set
        self._handed_out = 0  # batches of the current epoch handed to the consumer
        self._started = False  # an epoch has begun (the next iteration is the next epoch)
        self._restored = False  # load_state_dict set the position the next iteration starts at

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator, not a _BaseDataLoaderIter
        """One epoch. Each iteration is the next epoch: Lightning stops reading a sized loader after
        its last batch without exhausting it, so the epoch cannot advance on exhaustion."""
        sampler = self.resumable_sampler
        _, world = data_parallel_rank_and_size()
        if self._restored:
            self._restored = False
            if sampler.start >= sampler.steps_per_epoch(world) * self.batch * world:  # saved at an epoch's end
                sampler.epoch, sampler.start = sampler.epoch + 1, 0
        elif self._started:
            sampler.epoch, sampler.start = sampler.epoch + 1, 0
        self._started, self._handed_out = True, 0
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

    def consumed(self) -> int:
        """Samples of the current epoch consumed, over all ranks."""
        _, world = data_parallel_rank_and_size()
        return self.resumable_sampler.start + self._handed_out * self.batch * world

    def state_dict(self) -> dict[str, int]:
        _, world = data_parallel_rank_and_size()
        sampler = self.resumable_sampler
        return {
            "epoch": sampler.epoch,
            "consumed": self.consumed(),
            "seed": sampler.seed,
            "world_size": world,
            "batch_size": self.batch,
            "num_items": sampler.num_items,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        _, world = data_parallel_rank_and_size()
        sampler = self.resumable_sampler
        now = {"world_size": world, "batch_size": self.batch, "num_items": sampler.num_items, "seed": sampler.seed}
        changed = [f"{key} {state.get(key)} -> {value}" for key, value in now.items() if state.get(key) != value]
        if changed:
            raise PipelineError(
                f"cannot resume: the checkpoint's data loader differs from this run's ({'; '.join(changed)}); "
                "resume with the same devices, batch size and data, or set resume: never"
            )
        sampler.epoch, sampler.start, self._handed_out = int(state["epoch"]), int(state["consumed"]), 0
        self._restored = True
