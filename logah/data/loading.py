"""Batches through ``torch.utils.data.DataLoader``, indexed by training step.

A training run must be able to stop at any step and resume to the same result, on any number of
ranks, so a batch is a pure function of (seed, rank, world size, step):

* ``StepSampler`` yields, for steps ``start .. end - 1``, the key ``(step, indices)`` of this
  rank's batch: epoch e = step // batches_per_epoch orders the data with
  ``torch.utils.data.DistributedSampler`` (seeded permutation, this rank's disjoint share, padded
  by wrapping so every rank has as many batches; ``set_epoch(e)``), and the step's batch is the
  next ``batch_size`` of them. Resuming at step s is a sampler that starts at s: nothing about
  the data position is saved beyond the step;
* ``StepBatches`` turns a key into the batch itself (stacked in one vectorised gather, not item by
  item; any augmentation seeded from the key's step), so the ``DataLoader`` runs with
  ``batch_size=None`` and its workers build whole batches;
* workers and pinned memory where the model trains on a GPU (``loader_options``): batches are
  built while the GPU computes. On the CPU the batches are built in the training process, whose
  cores are the ones the model uses anyway.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from logah.errors import LogahError

BatchKey = tuple[int, list[int]]      # (step, dataset indices); step -1 for evaluation batches
GPU_LOADER_WORKERS = 4


def epoch_order(n: int, *, rank: int, world_size: int, seed: int, epoch: int) -> list[int]:
    """This rank's share of ``range(n)`` in ``epoch``: a seeded permutation, every
    ``world_size``-th index from ``rank`` on, padded by wrapping around (DistributedSampler)."""
    if not isinstance(world_size, int) or world_size < 1:
        raise LogahError(f"world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise LogahError(f"rank must be in 0..{world_size - 1}, got {rank!r}")
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return list(sampler)


class StepSampler(Sampler[BatchKey]):
    """The keys of this rank's batches for steps ``start .. end - 1`` (module docstring)."""

    def __init__(self, n: int, batch_size: int, *, rank: int, world_size: int, seed: int,
                 start: int = 0, end: int | None = None):
        self.n, self.batch_size = n, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        per_rank = -(-n // world_size)
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise LogahError(f"{n} items are fewer than one batch of {batch_size} per rank for "
                             f"{world_size} rank(s)")
        self.start, self.end = start, end
        self._epoch, self._order = -1, []

    def indices(self, step: int) -> list[int]:
        """Dataset indices of this rank's batch at ``step``."""
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = epoch_order(self.n, rank=self.rank, world_size=self.world_size,
                                      seed=self.seed, epoch=epoch)
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]

    def __iter__(self) -> Iterator[BatchKey]:
        step = self.start
        while self.end is None or step < self.end:
            yield step, self.indices(step)
            step += 1

    def __len__(self) -> int:
        if self.end is None:
            raise TypeError("an unbounded StepSampler has no length")
        return max(0, self.end - self.start)


class StepBatches(Dataset):
    """A map-style dataset over batch keys: ``make_batch(step, indices)`` builds the batch."""

    def __init__(self, make_batch: Callable[[int, list[int]], object]):
        self.make_batch = make_batch

    def __getitem__(self, key: BatchKey):
        step, indices = key
        return self.make_batch(step, indices)


def loader_options(device: torch.device) -> dict:
    """DataLoader settings for a model on ``device``: worker processes and pinned memory on a
    GPU, the training process itself on a CPU (``LOGAH_LOADER_WORKERS`` sets the count)."""
    cuda = torch.device(device).type == "cuda"
    try:
        workers = int(os.environ.get("LOGAH_LOADER_WORKERS", GPU_LOADER_WORKERS if cuda else 0))
    except ValueError:
        raise LogahError("LOGAH_LOADER_WORKERS must be a whole number of worker processes") from None
    options: dict = {"num_workers": max(0, workers), "pin_memory": cuda}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=2)
    return options


def batch_loader(make_batch: Callable[[int, list[int]], object], keys: Sampler | list,
                 device: torch.device) -> DataLoader:
    """The batches of ``keys`` built by ``make_batch``, through a DataLoader. It has a generator
    of its own: starting to iterate draws a base seed for workers, which from torch's global RNG
    would shift the dropout of every later step by where in the run the loader was started."""
    return DataLoader(StepBatches(make_batch), sampler=keys, batch_size=None,
                      generator=torch.Generator().manual_seed(0), **loader_options(device))


def evaluation_keys(n: int, batch_size: int, max_batches: int = 0) -> list[BatchKey]:
    """Consecutive batches over ``range(n)`` in order (the last one short), at most
    ``max_batches`` of them (0: all); their step is -1 (no augmentation)."""
    keys = [(-1, list(range(start, min(start + batch_size, n)))) for start in range(0, n, batch_size)]
    return keys[:max_batches] if max_batches else keys
