"""What the real-shot generators (`issynth`, `disef`) share: img2img from a class's K real shots.

Image i of class c under seed s, attempt a, depends only on (s, c, i, a):
- which shot it starts from (and, for DISEF, whose caption it uses) comes from `plan_rng(s, c, i, a)`;
- its noise comes from the generator the sampler hands over (attempt 0, seeded with (s, c, i)) or
  from `attempt_generator(s, c, i, a)` for the retries of DISEF's filter.

A shot is centre-cropped to a square, resized to the model's resolution and encoded once per job
with the VAE posterior mean (no sampling noise), then noised to `strength` and denoised by a stock
diffusers StableDiffusionImg2ImgPipeline built from the text-to-image pipeline's own components.
diffusers runs int(steps * strength) denoising steps; strength 0 means no noise and no denoising,
which is the VAE round trip of the shot, and a positive strength below 1/steps is raised to one step.

Each image's provenance (source shot, caption, attempts, ...) is kept in `provenance.json` in its
shard folder and added as extra columns to shard.csv and the chunk CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from datadream_core.data.images import load_rgb
from datadream_core.io import LOG, read_json, write_json
from datadream_core.seeding import seeded_generator, seeded_rng
from datadream_core.synth.manifest import SHARD_HEADER
from datadream_core.synth.sampler import image_name

PLAN_TAG = 0x1DEA  # keeps the planning stream apart from the noise streams of the same (s, c, i, a)


@dataclass(frozen=True)
class Img2ImgSettings:
    steps: int = 50
    guidance_scale: float = 2.0
    strength: float = 0.5


def strength_for_shots(table: Mapping, shots: int) -> float:
    """The strength of the largest K in `table` that is <= `shots` (the smallest K when all are larger).

    IsSynth's real guidance noises the shot less the more shots there are (its refer_img_iters
    50/40/35/20/15 of 100 GLIDE steps for 1/2/4/8/16 shots), so K between two keys takes the lower key's.
    """
    if not table:
        raise ValueError("synth.issynth_strength is empty: give at least one shots -> strength entry")
    keyed = sorted((int(key), float(value)) for key, value in table.items())
    below = [value for key, value in keyed if key <= shots]
    return below[-1] if below else keyed[0][1]


def denoising_steps(steps: int, strength: float) -> int:
    return min(int(steps * strength), steps)


def runnable_strength(steps: int, strength: float) -> float:
    """`strength`, raised to one denoising step when diffusers would run none (0 stays 0)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"img2img strength must be in [0, 1], got {strength}")
    if strength == 0 or denoising_steps(steps, strength) >= 1:
        return strength
    raised = min(1.0, (1.0 + 1e-6) / steps)
    LOG.warning("img2img strength %.3f runs no step out of %d; using %.3f (one step)", strength, steps, raised)
    return raised


def plan_rng(seed: int, class_index: int, image_index: int, attempt: int = 0) -> np.random.Generator:
    return seeded_rng(seed, class_index, image_index, attempt, PLAN_TAG)


def attempt_generator(seed: int, class_index: int, image_index: int, attempt: int) -> torch.Generator:
    """Fresh noise for retry `attempt` >= 1 of image i (attempt 0 uses the sampler's generator)."""
    if attempt < 1:
        raise ValueError("attempt 0 uses the sampler's own generator")
    return seeded_generator(seed, class_index, image_index, attempt)


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, then resize to `size` x `size` (bicubic)."""
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    return image if image.size == (size, size) else image.resize((size, size), Image.BICUBIC)


def load_img2img(pipe):
    """A StableDiffusionImg2ImgPipeline sharing every component (and so the weights) of `pipe`."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    return img2img


def model_resolution(pipe) -> int:
    return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor


class ShotLatents:
    """Each shot's VAE latent (posterior mean times the scaling factor), encoded once."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.size = model_resolution(pipe)
        self._cache: dict[str, torch.Tensor] = {}

    def image(self, path: str) -> Image.Image:
        return square_resize(load_rgb(path), self.size)

    def __call__(self, path: str) -> torch.Tensor:
        if path not in self._cache:
            pipe = self.pipe
            pixels = pipe.image_processor.preprocess(self.image(path), height=self.size, width=self.size)
            pixels = pixels.to(pipe.device, pipe.vae.dtype)
            with torch.inference_mode():
                latent = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
            self._cache[path] = latent
        return self._cache[path]


def img2img_images(pipe, latents: ShotLatents, shot_paths: Sequence[str], prompts: Sequence[str],
                   generators: Sequence[torch.Generator], settings: Img2ImgSettings) -> list[Image.Image]:
    """Noise each shot's latent to `settings.strength` and denoise it with its prompt and generator."""
    init = torch.cat([latents(path) for path in shot_paths])
    strength = runnable_strength(settings.steps, settings.strength)
    with torch.inference_mode():
        if strength == 0:  # no noise, no denoising: the VAE round trip of the shot
            decoded = pipe.vae.decode(init / pipe.vae.config.scaling_factor).sample
            return pipe.image_processor.postprocess(decoded, output_type="pil")
        return pipe(prompt=list(prompts), image=init, strength=strength, num_inference_steps=settings.steps,
                    guidance_scale=settings.guidance_scale, generator=list(generators), output_type="pil").images


def class_shots(shots, class_index: int) -> list[str]:
    """The paths of one class's shots in rank order (rank 0 first)."""
    paths = [shot.path for shot in sorted(shots, key=lambda shot: shot.rank) if shot.class_index == class_index]
    if not paths:
        raise ValueError(f"no real shots for class {class_index}: img2img generators need at least one")
    return paths


class ProvenanceLog:
    """Per-image facts of one shard (`provenance.json`, in its staging folder), kept across reruns while the
    shard's identity holds.

    Entries are written before the sampler saves the images, so an image on disk always has its entry;
    an entry without an image is simply recomputed, with the same result, when the image is made.
    """

    FILE = "provenance.json"

    def __init__(self, folder: str | Path, identity: str):
        self.path = Path(folder) / self.FILE
        self.identity = identity
        self.images: dict[int, dict] = {}
        if self.path.exists():
            stored = read_json(self.path)
            if stored.get("identity") == identity:
                self.images = {int(index): entry for index, entry in stored["images"].items()}

    def record(self, entries: Mapping[int, dict]) -> None:
        self.images.update({int(index): dict(entry) for index, entry in entries.items()})
        write_json(self.path, {"identity": self.identity,
                               "images": {str(index): self.images[index] for index in sorted(self.images)}})

    def drop_unrecorded(self, indices: Sequence[int]) -> list[int]:
        """Delete images of `indices` that have no entry, so that the sampler makes them again."""
        dropped = []
        for index in indices:
            png = self.path.parent / image_name(index)
            if png.exists() and index not in self.images:
                png.unlink()
                dropped.append(index)
        if dropped:
            LOG.warning("%s: %d images had no provenance entry; making them again", self.path.parent, len(dropped))
        return dropped


def with_provenance(rows: Sequence[tuple], log: ProvenanceLog, columns: Sequence[str]) -> list[tuple]:
    """Shard rows (SHARD_HEADER order) with the provenance `columns` appended."""
    image_column = SHARD_HEADER.index("image_index")
    extended = []
    for row in rows:
        entry = log.images.get(int(row[image_column]))
        if entry is None:
            raise RuntimeError(f"{log.path}: no provenance for image {row[image_column]}")
        extended.append(tuple(row) + tuple(entry[column] for column in columns))
    return extended


Classify = Callable[[Sequence[Image.Image]], Sequence[int]]
