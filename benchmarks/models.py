"""The models and data the benchmarks run on: tiny models (datadream_core.models.tiny) or the real-size
SD 2.1-base / ViT-B/16 architectures with random weights, saved to disk and loaded back the real way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

# stabilityai/stable-diffusion-2-1-base vae/config.json and scheduler/scheduler_config.json (network-shaping fields)
SD21_BASE_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD21_BASE_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": False, "prediction_type": "epsilon",
}


def build_sd(folder: Path, real_size: bool, seed: int = 0) -> str:
    """A StableDiffusionPipeline folder: the tiny model, or SD 2.1-base's architecture with random weights."""
    if (folder / "model_index.json").is_file():
        return str(folder)
    if not real_size:
        from datadream_core.models.tiny import build_tiny_sd

        return str(build_tiny_sd(folder, seed=seed))
    import tempfile

    from diffusers import AutoencoderKL, PNDMScheduler

    from datadream_core.models.architectures import SD21_BASE_UNET, SD21_TEXT_ENCODER, build_text_encoder, build_unet
    from datadream_core.models.tiny import save_sd_folder, write_clip_tokenizer

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(scratch, model_max_length=77))
    text_config = dict(SD21_TEXT_ENCODER, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    return str(save_sd_folder(folder, AutoencoderKL(**SD21_BASE_VAE), build_unet(SD21_BASE_UNET),
                              build_text_encoder(text_config), tokenizer, PNDMScheduler(**SD21_BASE_SCHEDULER)))


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
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    paths = []
    for index in range(count):
        canvas = np.zeros((height, width, 3))
        canvas += rng.uniform(0, 255, 3) * (ys / height)[..., None] + rng.uniform(0, 255, 3) * (1 - ys / height)[..., None]
        for _ in range(3):
            cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.4) * min(size)
            blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))[..., None]
            canvas = canvas * (1 - blob) + rng.uniform(0, 255, 3) * blob
        canvas += rng.normal(0, 6, canvas.shape)
        path = folder / f"{index:05d}.{fmt}"
        image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        image.save(path, **({"quality": 90} if fmt == "jpg" else {}))
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
