"""`disef`: DISEF's synthetic augmentation (da Costa et al. 2023) with the same Stable Diffusion as DataDream.

Each image starts from one real shot of its class (img2img at synth.disef_strength, synth.disef_steps,
synth.disef_guidance_scale) and is conditioned on the caption of a DIFFERENT real shot of the same class:
prompt = "{class prompt}, {caption}". DISEF's LLaVA captions are told the class; our BLIP captions are
not, so the class prompt goes first. With K = 1 there is no other shot and the source's own caption is used.

A CLIP zero-shot filter (synth.disef_filter, by default DISEF's ViT-H/14 LAION-2B; null: the classifier's
base CLIP, models.clip; the class prompts as text) keeps an image only if it is classified as its target class. A rejected image is made again with a fresh shot,
caption and noise drawn from (seed, class, i, attempt), up to synth.disef_max_attempts attempts in all;
after the budget the last attempt is kept and marked filter_passed = 0. Attempts and rejections are
recorded per image (shard.csv / chunk CSV columns) and summed per class by `attempt_summary` for the job log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from PIL import Image

from datadream_core.io import LOG
from datadream_core.synth.img2img import (Classify, Img2ImgSettings, ShotLatents, attempt_generator, img2img_images,
                                          plan_rng)
from datadream_core.synth.sampler import Renderer

PROVENANCE_COLUMNS = ("source_shot", "caption_shot", "caption", "attempts", "rejected", "filter_passed")


@dataclass(frozen=True)
class DisefPlan:
    source_shot: str
    caption_shot: str


def disef_plan(shot_paths: Sequence[str], seed: int, class_index: int, image_index: int, attempt: int = 0) -> DisefPlan:
    """Source shot and caption shot of one attempt; the caption shot is another shot whenever K > 1."""
    rng = plan_rng(seed, class_index, image_index, attempt)
    source = int(rng.integers(len(shot_paths)))
    if len(shot_paths) == 1:
        return DisefPlan(shot_paths[0], shot_paths[0])
    other = int(rng.integers(len(shot_paths) - 1))
    other += other >= source  # uniform over the K - 1 other shots
    return DisefPlan(shot_paths[source], shot_paths[other])


def disef_prompt(class_prompt: str, caption: str) -> str:
    caption = caption.strip()
    return f"{class_prompt}, {caption}" if caption else class_prompt


class ClipFilter:
    """Zero-shot CLIP over the class prompts: `predict(images)` gives each image's argmax class."""

    def __init__(self, clip, class_prompts: Sequence[str], device: str | torch.device = "cpu", batch_size: int = 64):
        import open_clip

        self.model = clip.model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.preprocess = open_clip.image_transform(clip.image_size, is_train=False, mean=clip.mean, std=clip.std)
        with torch.inference_mode():
            text = self.model.encode_text(clip.tokenize(list(class_prompts)).to(self.device)).float()
        self.text = torch.nn.functional.normalize(text, dim=-1)

    def logits(self, images: Sequence[Image.Image]) -> torch.Tensor:
        out = []
        for begin in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(image) for image in images[begin:begin + self.batch_size]])
            with torch.inference_mode():
                features = self.model.encode_image(batch.to(self.device)).float()
            out.append(torch.nn.functional.normalize(features, dim=-1) @ self.text.T)
        return torch.cat(out).cpu()

    def predict(self, images: Sequence[Image.Image]) -> list[int]:
        return self.logits(images).argmax(dim=-1).tolist()

    __call__ = predict


def filter_clip(disef_filter: Mapping | None, classifier_clip: Mapping) -> dict:
    """The CLIP that filters: synth.disef_filter, or the classifier's (models.clip) when that is null."""
    chosen = disef_filter or classifier_clip
    return {"name": chosen["name"], "pretrained": chosen.get("pretrained", "")}


def load_clip_filter(clip_config: Mapping, class_prompts: Sequence[str], device: str | torch.device = "cpu") -> ClipFilter:
    from datadream_core.models.clip import load_clip

    return ClipFilter(load_clip(clip_config["name"], clip_config["pretrained"], device), class_prompts, device)


def attempt_summary(rows: Sequence[Mapping], max_attempts: int) -> list[str]:
    """Log lines: per class and overall, images that passed, attempts made and images that hit the cap."""
    by_class: dict[int, list[Mapping]] = {}
    for row in rows:
        by_class.setdefault(int(row["class_index"]), []).append(row)

    def line(label: str, members: Sequence[Mapping]) -> str:
        attempts = [int(row["attempts"]) for row in members]
        passed = sum(int(row["filter_passed"]) for row in members)
        capped = sum(1 for row in members if int(row["attempts"]) >= max_attempts and not int(row["filter_passed"]))
        return (f"disef filter, {label}: {passed}/{len(members)} images passed, {sum(attempts)} attempts"
                f" (mean {sum(attempts) / len(members):.1f}, max {max(attempts)} of {max_attempts}),"
                f" {capped} kept unpassed at the cap")

    lines = [line(f"class {index}", members) for index, members in sorted(by_class.items())]
    return lines + [line("all classes", rows)] if rows else lines


def disef_renderer(pipe, latents: ShotLatents, shot_paths: Sequence[str], captions: Mapping[str, str],
                   class_prompt: str, class_index: int, seed: int, settings: Img2ImgSettings, classify: Classify,
                   max_attempts: int, record: Callable[[Mapping[int, dict]], None] | None = None) -> Renderer:
    """A renderer for one class: captioned img2img, filtered by `classify`, retried up to `max_attempts`."""
    if max_attempts < 1:
        raise ValueError("synth.disef_max_attempts must be at least 1")
    missing = [path for path in shot_paths if path not in captions]
    if missing:
        raise ValueError(f"no caption for {len(missing)} shots of class {class_index} (first: {missing[0]});"
                         f" the captions CSV does not match the few-shot set")
    if len(shot_paths) == 1:
        LOG.warning("class %d has one shot: DISEF uses that shot's own caption (there is no other shot)", class_index)

    def render(prompts, generators, image_indices):
        results: dict[int, Image.Image] = {}
        entries: dict[int, dict] = {}
        pending = list(range(len(image_indices)))
        for attempt in range(max_attempts):
            if not pending:
                break
            indices = [image_indices[pos] for pos in pending]
            plans = [disef_plan(shot_paths, seed, class_index, index, attempt) for index in indices]
            texts = [captions[plan.caption_shot] for plan in plans]
            noise = [generators[pos] if attempt == 0 else attempt_generator(seed, class_index, index, attempt)
                     for pos, index in zip(pending, indices)]
            images = img2img_images(pipe, latents, [plan.source_shot for plan in plans],
                                    [disef_prompt(class_prompt, text) for text in texts], noise, settings)
            predicted = classify(images)
            still = []
            for pos, index, plan, text, image, label in zip(pending, indices, plans, texts, images, predicted):
                passed = int(label) == class_index
                rejected = entries.get(index, {}).get("rejected", 0) + (0 if passed else 1)
                results[pos] = image
                entries[index] = {"source_shot": plan.source_shot, "caption_shot": plan.caption_shot,
                                  "caption": text, "attempts": attempt + 1, "rejected": rejected,
                                  "filter_passed": int(passed)}
                if not passed:
                    still.append(pos)
            pending = still
        if pending:
            LOG.info("class %d: %d images still rejected after %d attempts; kept their last attempt",
                     class_index, len(pending), max_attempts)
        if record is not None:
            record(entries)
        return [results[pos] for pos in range(len(image_indices))]

    return render
