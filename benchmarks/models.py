"""The models and data the benchmarks run on: tiny models (datadream_core.models.tiny) or the real-size
SD 2.1-base / ViT-B/16 architectures with random weights, saved to disk and loaded back the real way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def build_sd(folder: Path, real_size: bool, seed: int = 0) -> str:
    """A StableDiffusionPipeline folder: the tiny model, or SD 2.1-base's architecture with random weights."""
    if (folder / "model_index.json").is_file():
        return str(folder)
    if not real_size:
        from datadream_core.models.tiny import build_tiny_sd

        return str(build_tiny_sd(folder, seed=seed))
    from datadream_core.models.architectures import build_real_size_sd

    return str(build_real_size_sd(folder, seed=seed))


def build_clip(folder: Path, real_size: bool, seed: int = 0):
    """(model, tokenize, image_size, mean, std): the tiny open_clip ViT or ViT-B/16 with random weights."""
    from datadream_core.models.clip import load_clip

    if real_size:
        return load_clip("ViT-B-16", "", device="cpu")
    from datadream_core.models.tiny import build_tiny_clip

    if not (folder / "open_clip_config.json").is_file():
        build_tiny_clip(folder, seed=seed)
    return load_clip(str(folder), "", device="cpu")


def write_images(folder: Path, count: int, size: tuple[int, int], seed: int, fmt: str = "png") -> list[str]:
    """Smooth random colour images (a few blobs on a gradient), `size` = (width, height)."""
    from datadream_core.data.fabricate import fabricated_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.{fmt}"
        fabricated_image(size, rng).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(str(path))
    return paths


def build_adapters(sd_path: str, out_root: Path, count: int, rank: int, b_std: float, seed: int = 0) -> list[str]:
    """`count` DataDream-format adapters (UNet + text encoder LoRA) with random, non-zero B matrices."""
    from datadream_core.dream import LORA_FILE, DreamSettings, add_lora, save_lora
    from datadream_core.models.sd import load_sd_parts

    folders = [out_root / f"c{index:04d}" for index in range(count)]
    if all((folder / LORA_FILE).is_file() for folder in folders):
        return [str(folder) for folder in folders]
    settings = DreamSettings(rank=rank, alpha=rank)
    parts = load_sd_parts(sd_path)
    torch.manual_seed(seed)
    add_lora(parts, settings)
    named = [(name, p) for model in (parts.unet, parts.text_encoder) for name, p in model.named_parameters()
             if "lora_" in name]
    for index, folder in enumerate(folders):
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        with torch.no_grad():
            for name, param in named:
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * b_std)
        folder.mkdir(parents=True, exist_ok=True)
        save_lora(parts, settings, folder)
    return [str(folder) for folder in folders]


def class_prompts(count: int) -> list[str]:
    """Synthetic class prompts in the paper's template ("a {D}photo of a {C}")."""
    return [f"a photo of a class {index:03d} object" for index in range(count)]


def randomise_clip_lora(model, std: float, seed: int) -> None:
    """Give the classifier's LoRA B matrices random values, so the adapter changes the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora." in name and name.endswith(".B"):
                param.copy_(torch.randn(param.shape, generator=generator) * std)
