"""The seed helpers give exactly the values of the formulas the shipped models, images and adapters were made with."""

import numpy as np
import pytest
import torch

from datadream_core.dream import step_generator
from datadream_core.seeding import seed_from, seeded_generator, seeded_rng
from datadream_core.synth.img2img import attempt_generator
from datadream_core.synth.sampler import image_generator

PARTS = [(0, 0, 0), (0, 1, 2), (3, 17, 255), (2024, 99, 10**6), (7, 2, 1, 4), (5, 3)]


def _old_generator_seed(parts) -> int:
    state = np.random.SeedSequence(list(parts)).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


@pytest.mark.parametrize("parts", PARTS)
def test_seeded_generator_keeps_the_old_64_bit_formula(parts):
    assert seeded_generator(*parts).initial_seed() == _old_generator_seed(parts)
    old = torch.Generator().manual_seed(_old_generator_seed(parts))
    assert torch.equal(torch.randn(8, generator=seeded_generator(*parts)), torch.randn(8, generator=old))


@pytest.mark.parametrize("parts", PARTS)
def test_seed_from_keeps_the_old_32_bit_formula(parts):
    assert seed_from(*parts) == int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@pytest.mark.parametrize("parts", PARTS)
def test_seeded_rng_is_numpys_default_rng_of_the_list(parts):
    assert np.array_equal(seeded_rng(*parts).permutation(50), np.random.default_rng(list(parts)).permutation(50))


def test_tuple_scopes_are_flattened_into_the_parts():
    """A LoFT adapter's scope (class + 1, rank + 1) seeds as the words seed, class + 1, rank + 1, step."""
    assert step_generator(3, (2, 5), 7).initial_seed() == _old_generator_seed((3, 2, 5, 7))


def test_the_named_generators_are_the_helper_on_their_parts():
    assert step_generator(3, 1, 40).initial_seed() == _old_generator_seed((3, 1, 40))
    assert image_generator(0, 5, 12).initial_seed() == _old_generator_seed((0, 5, 12))
    assert attempt_generator(1, 2, 3, 4).initial_seed() == _old_generator_seed((1, 2, 3, 4))
    assert len({seeded_generator(*parts).initial_seed() for parts in PARTS}) == len(PARTS)
