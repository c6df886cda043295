"""Every random stream of a run is a function of (seed, rank, step).

That is what makes a resumed run repeat an uninterrupted one and gives every rank of a
distributed run its own draws: the torch RNG of each training step (dropout), the augmentation
of each batch, the architectures of each meta-batch. None of them needs saving in a checkpoint
beyond the step.
"""

from __future__ import annotations

import numpy as np


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 32-bit seed for one rank's step: a hash of the three, so no two steps share a stream."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def step_rng(seed: int, rank: int, step: int) -> np.random.Generator:
    """A numpy generator for one rank's step (e.g. the architectures of a meta-batch)."""
    return np.random.default_rng([seed, rank, step])
