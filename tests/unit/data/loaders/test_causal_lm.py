import numpy as np
import pytest
import torch

from llm_pipeline.data.loaders.causal_lm import TokenWindowDataset, build_lm_dataloaders
from llm_pipeline.errors import PipelineError


@pytest.fixture
def shard_dir(tmp_path):
    np.arange(1000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(101, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return tmp_path


def test_random_windows_are_shifted_by_one(shard_dir):
    ds = TokenWindowDataset(shard_dir / "train.bin", "uint16", block_size=8, random=True, samples_per_epoch=5)
    assert len(ds) == 5
    x, y = ds[0]
    assert x.dtype == torch.long and x.shape == y.shape == (8,)
    torch.testing.assert_close(y[:-1], x[1:])
    assert y[-1] == x[-1] + 1  # arange data: the target is the next token


def test_random_window_i_starts_in_chunk_i(shard_dir):
    # the index decides the chunk, so a distributed sampler's disjoint indices give each
    # rank different data even though all ranks share one RNG seed
    ds = TokenWindowDataset(shard_dir / "train.bin", "uint16", block_size=8, random=True)
    assert len(ds) == 124  # (1000 - 1) // 8: one pass per epoch by default
    for i in (0, 3, 50, 123, 124 + 3):
        assert int(ds[i][0][0]) // 8 == i % 124
    starts = {int(ds[3][0][0]) for _ in range(50)}
    assert len(starts) > 1  # jittered within the chunk


def test_sequential_windows_cover_every_token_once(shard_dir):
    ds = TokenWindowDataset(shard_dir / "val.bin", "uint16", block_size=10, random=False)
    assert len(ds) == 10
    targets = torch.cat([ds[i][1] for i in range(len(ds))])
    torch.testing.assert_close(targets, torch.arange(1, 101))


def test_wrong_dtype_or_short_file_is_a_pipeline_error(shard_dir):
    np.arange(3, dtype=np.uint8).tofile(shard_dir / "odd.bin")
    with pytest.raises(PipelineError, match="odd.bin"):
        TokenWindowDataset(shard_dir / "odd.bin", "uint16", 8, random=False)
    with pytest.raises(PipelineError, match="fewer than"):
        TokenWindowDataset(shard_dir / "val.bin", "uint16", 200, random=False)


def test_build_lm_dataloaders_batches(shard_dir):
    train, val = build_lm_dataloaders(shard_dir, "uint16", block_size=8, batch_size=4, samples_per_epoch=12)
    x, y = next(iter(train))
    assert x.shape == y.shape == (4, 8) and len(train) == 3
    assert sum(b[0].shape[0] for b in val) == 12  # (101 - 1) // 8 windows


def test_a_shard_over_4_gib_reads_its_far_windows(tmp_path):
    # a sparse file: 2^31 + 1000 uint16 tokens (4 GiB + 2000 bytes) costs no disk; the tokens
    # written past 4 GiB must come back where they are, not wrapped by a 32-bit offset
    path, n, block = tmp_path / "train.bin", 2**31 + 1000, 16
    tail = np.arange(1, 1001, dtype=np.uint16)
    with open(path, "wb") as f:
        f.truncate(n * 2)
        f.seek((n - len(tail)) * 2)
        f.write(tail.tobytes())
    data = TokenWindowDataset(path, "uint16", block, random=False)
    assert data.num_tokens == n
    x, y = data[data.num_windows - 1]  # the last window ends at token n - 1
    start = (data.num_windows - 1) * block
    want = np.zeros(block + 1, dtype=np.int64)
    written = np.arange(start, start + block + 1) >= n - len(tail)
    want[written] = tail[np.arange(start, start + block + 1)[written] - (n - len(tail))]
    assert written.all() and want.min() > 0  # the window lies wholly in the written tail
    assert x.tolist() == want[:-1].tolist() and y.tolist() == want[1:].tolist()
