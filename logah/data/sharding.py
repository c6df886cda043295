"""Sharding: each distributed worker reads a different part of the data.

A known fault of the anchor code is that under DDP every rank draws the same data. Here every
rank computes the same seeded permutation for the epoch and keeps every ``world_size``-th index
from its rank on, so the shards are disjoint and together cover the dataset. As in
``torch.utils.data.DistributedSampler``, the permutation is padded by wrapping around so every
rank gets the same number of indices (DDP steps stay in lock-step); ``drop_last`` drops the tail
instead, which keeps shards strictly disjoint.

    >>> shard_indices(10, rank=0, world_size=2, seed=0, epoch=0)   # 5 indices, rank 1 gets the others
"""

from __future__ import annotations

from typing import Iterator, Sized

import numpy as np
from torch.utils.data import Sampler

from logah.errors import LogahError


def shard_indices(n: int, rank: int, world_size: int, seed: int, epoch: int, *,
                  shuffle: bool = True, drop_last: bool = False) -> list[int]:
    """Indices of ``range(n)`` for ``rank`` of ``world_size`` in ``epoch`` (new order each epoch)."""
    if not isinstance(world_size, int) or world_size < 1:
        raise LogahError(f"world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise LogahError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    if not isinstance(n, int) or n < 0:
        raise LogahError(f"number of items must be a non-negative integer, got {n!r}")
    if not all(isinstance(v, int) and v >= 0 for v in (seed, epoch)):
        raise LogahError(f"seed and epoch must be non-negative integers, got {seed!r}, {epoch!r}")
    order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n))
    if drop_last:
        order = order[: n - n % world_size]
    elif n and n % world_size:
        order = np.resize(order, n + world_size - n % world_size)  # wrap around to pad
    return order[rank::world_size].tolist()


class ShardSampler(Sampler[int]):
    """``shard_indices`` as a DataLoader sampler; call ``set_epoch`` at the start of each epoch."""

    def __init__(self, data: Sized | int, *, rank: int, world_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        self.n = data if isinstance(data, int) else len(data)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle, self.drop_last, self.epoch = shuffle, drop_last, 0
        shard_indices(0, rank, world_size, seed, 0)  # validate now, not at the first epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        return shard_indices(self.n, self.rank, self.world_size, self.seed, self.epoch,
                             shuffle=self.shuffle, drop_last=self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.world_size
        return -(-self.n // self.world_size)
