"""Seeds derived from tuples of integers, so that every random choice is named by what it is for.

A tuple such as (seed, class index, image index) goes through numpy's SeedSequence, which mixes its words
into well-spread state: neighbouring tuples give unrelated streams. The shipped miniworld models and every
image and adapter are made with these exact formulas: changing them changes all outputs.
Torch is imported only by `seeded_generator`, so light jobs (few-shot sampling, rendering) stay torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def seed_from(*parts: int) -> int:
    """A 32-bit seed (one word of state) for `torch.manual_seed`, `random.Random` or a model's init."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU torch generator seeded with 64 bits (two words of state) mixed from `parts`."""
    import torch

    state = np.random.SeedSequence(list(parts)).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def seeded_rng(*parts: int) -> np.random.Generator:
    """A numpy generator on the SeedSequence of `parts` (numpy's default_rng of the list, the same stream)."""
    return np.random.default_rng(list(parts))
