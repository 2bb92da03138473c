"""LoFT (Kim et al., 2025): a class's images from mixtures of two of its per-image adapters.

The class's K adapters (one per real shot) give K(K-1)/2 unordered pairs; one seeded shuffle of them is
repeated to cover the images, so image i's pair depends on (seed, class, i) alone, whatever the shard or batch
size, and every pair is used once before any is used again. Mixing merges weights: each projection the
adapters target becomes W + w dW_a + (1 - w) dW_b over the model's own base tensors (text2img.BaseWeights), so
every merge starts from the exact base. Images are grouped by pair, so a batch shares one merge.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from datadream_core.seeding import seeded_rng
from datadream_core.synth.sampler import Renderer
from datadream_core.synth.text2img import BaseWeights, Factors, load_lora_factors

Pair = tuple[int, int]


def pair_schedule(n_adapters: int, seed: int, class_index: int) -> list[Pair]:
    """Every unordered pair of a class's adapters in one seeded order; image i uses entry i mod its length.

    One adapter makes the pair (0, 0): every image uses that adapter whatever the weight.
    """
    pairs = list(itertools.combinations(range(n_adapters), 2)) or [(0, 0)]
    order = seeded_rng(seed, class_index, n_adapters).permutation(len(pairs))
    return [pairs[position] for position in order]


def pair_of(schedule: Sequence[Pair], image_index: int) -> Pair:
    return schedule[image_index % len(schedule)]


class AdapterMixer:
    """Merges per-image adapters into one pipeline, a pair at a time, over the exact base weights."""

    def __init__(self, pipe, weight: float):
        self.pipe = pipe
        self.weight = weight
        self.base = BaseWeights(pipe)
        self.adapters: list[Factors] = []
        self.current: Pair | None = None

    def load(self, adapter_dirs: Sequence[str]) -> None:
        """Take a class's adapters (their order numbers the pairs); the pipeline is the base model until `use`."""
        self.base.write()
        self.adapters = [load_lora_factors(folder, self.pipe.unet.device) for folder in adapter_dirs]
        for key in sorted({key for adapter in self.adapters for key in adapter}):
            self.base.remember(*key)
        self.current = None

    def use(self, pair: Pair) -> None:
        """Make the pipeline W + w dW_a + (1 - w) dW_b for `pair` = (a, b); w 1 or 0 is one adapter alone."""
        if pair == self.current:
            return
        terms = [(self.adapters[index], share) for index, share in zip(pair, (self.weight, 1.0 - self.weight)) if share]
        self.base.write(terms)
        self.current = pair


def loft_renderer(render: Renderer, mixer: AdapterMixer, schedule: Sequence[Pair]) -> Renderer:
    """`render` with each batch's pair merged in; batches must share a pair (run_shard's `group_of`)."""

    def render_pair(prompts, generators, image_indices):
        pairs = {pair_of(schedule, index) for index in image_indices}
        if len(pairs) != 1:
            raise ValueError(f"images {list(image_indices)} of one batch use the adapter pairs {sorted(pairs)}")
        mixer.use(pairs.pop())
        return render(prompts, generators, image_indices)

    return render_pair
