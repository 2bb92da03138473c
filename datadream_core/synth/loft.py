"""LoFT (Kim et al., 2025): a class's images from mixtures of two of its per-image adapters.

The class's K adapters (one per real shot) give K(K-1)/2 unordered pairs; one seeded shuffle of them is
repeated to cover the images, so image i's pair depends on (seed, class, i) alone, whatever the shard or batch
size, and every pair is used once before any is used again. Image i passes through W x + w dW_a x + (1 - w) dW_b x
for its pair (a, b): each projection the adapters target gets the pair's low-rank factors per sample of the batch
(PairMixer), so one batch mixes as many pairs as it holds images and the model's own weights are never changed.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch

from datadream_core.seeding import seeded_rng
from datadream_core.synth.sampler import Renderer
from datadream_core.synth.text2img import Factors, load_lora_factors

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


class PairLoRALinear(torch.nn.Module):
    """A frozen Linear plus a low-rank delta per image of the batch: (down, up) of shapes (B, 2r, in) and
    (B, out, 2r), one row per image. A call with n = k * B samples (classifier-free guidance stacks the
    unconditional and conditional halves) gives sample j image j mod B's delta."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.base = base
        self.down: torch.Tensor | None = None
        self.up: torch.Tensor | None = None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = self.base(inputs)
        if self.down is None:
            return output
        images = self.down.shape[0]
        if inputs.shape[0] % images:
            raise ValueError(f"a batch of {inputs.shape[0]} samples for {images} images' adapter pairs")
        rows = torch.arange(inputs.shape[0], device=inputs.device) % images
        flat = inputs.reshape(inputs.shape[0], -1, inputs.shape[-1])
        delta = flat @ self.down[rows].to(flat.dtype).transpose(1, 2) @ self.up[rows].to(flat.dtype).transpose(1, 2)
        return output + delta.reshape(*inputs.shape[:-1], -1)


class PairMixer:
    """Gives every image of a batch its own pair of a class's per-image adapters, mixed with `weight`."""

    def __init__(self, pipe, weight: float):
        self.pipe = pipe
        self.weight = weight
        self.adapters: list[Factors] = []
        self.layers: dict[tuple[str, str], PairLoRALinear] = {}

    def load(self, adapter_dirs: Sequence[str]) -> None:
        """Take a class's adapters (their order numbers the pairs); the model is the base model until `use`."""
        self.adapters = [load_lora_factors(folder, self.pipe.unet.device) for folder in adapter_dirs]
        keys = sorted({key for adapter in self.adapters for key in adapter})
        for folder, adapter in zip(adapter_dirs, self.adapters):
            if sorted(adapter) != keys:
                raise ValueError(f"{folder}: its adapter changes other modules than the class's other adapters")
        for layer in self.layers.values():
            layer.down = layer.up = None
        for key in keys:
            if key not in self.layers:
                self.layers[key] = self._wrap(*key)

    def _wrap(self, model_name: str, module_name: str) -> PairLoRALinear:
        model = getattr(self.pipe, model_name)
        try:
            base = model.get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"the adapter changes {model_name}.{module_name}, which this Stable Diffusion model "
                             "does not have (an adapter of another model?)") from None
        parent, _, child = module_name.rpartition(".")
        layer = PairLoRALinear(base)
        setattr(model.get_submodule(parent) if parent else model, child, layer)
        return layer

    def use(self, pairs: Sequence[Pair]) -> None:
        """Set the delta of each image of the next batch: w dW_a + (1 - w) dW_b for its pair (a, b)."""
        shares = (self.weight, 1.0 - self.weight)
        for key, layer in self.layers.items():
            factors = [[self.adapters[index][key] for index in pair] for pair in pairs]
            layer.down = torch.stack([torch.cat([down for down, _ in pair]) for pair in factors])
            layer.up = torch.stack([torch.cat([share * up for (_, up), share in zip(pair, shares)], dim=1)
                                    for pair in factors])


def loft_renderer(render: Renderer, mixer: PairMixer, schedule: Sequence[Pair]) -> Renderer:
    """`render` with each image of a batch mixed from its own pair of adapters."""

    def render_pairs(prompts, generators, image_indices):
        mixer.use([pair_of(schedule, index) for index in image_indices])
        return render(prompts, generators, image_indices)

    return render_pairs
