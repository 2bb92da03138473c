"""`issynth`: IsSynth's "real guidance" (He et al., ICLR 2023) with the same Stable Diffusion as DataDream.

Every image starts from one of its class's K real shots, picked by the image's own seed, noised to a
strength that depends on K (synth.issynth_strength) and denoised with the class prompt
"a {domain }photo of a {class}", the same steps and guidance as the other generators.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from datadream_core.synth.img2img import Img2ImgSettings, ShotLatents, img2img_images, plan_rng
from datadream_core.synth.sampler import Renderer

PROVENANCE_COLUMNS = ("source_shot",)


def issynth_source(shot_paths: Sequence[str], seed: int, class_index: int, image_index: int) -> str:
    """The real shot image i of class c starts from: uniform over the class's K shots, fixed by (s, c, i)."""
    return shot_paths[int(plan_rng(seed, class_index, image_index).integers(len(shot_paths)))]


def issynth_renderer(pipe, latents: ShotLatents, shot_paths: Sequence[str], class_index: int, seed: int,
                     settings: Img2ImgSettings, record: Callable[[Mapping[int, dict]], None] | None = None) -> Renderer:
    """A renderer for one class: img2img from the seed-chosen shot with the class prompt."""

    def render(prompts, generators, image_indices):
        sources = [issynth_source(shot_paths, seed, class_index, index) for index in image_indices]
        images = img2img_images(pipe, latents, sources, prompts, generators, settings)
        if record is not None:
            record({index: {"source_shot": source} for index, source in zip(image_indices, sources)})
        return images

    return render
