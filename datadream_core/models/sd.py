"""Stable Diffusion parts from a Hugging Face hub id or a local folder in diffusers layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from datadream_core.models import ModelNotAvailable

# The half-precision settings (`mixed_precision`) of training and sampling; LoRA weights stay fp32 under either.
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class SDParts:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    noise_scheduler: object

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _not_available(path: str, error: Exception) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"Stable Diffusion model '{path}' is neither a local diffusers folder nor in the Hugging Face cache"
        f"{' (HF_HUB_OFFLINE is set)' if _offline() else ''}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}."
        f" Download it on a machine with network access (`huggingface-cli download {path}`) or set"
        f" models.sd.path to a local folder that holds model_index.json."
    )


def _check_source(path: str) -> None:
    local = Path(path)
    if local.is_dir() and not (local / "model_index.json").is_file():
        raise ModelNotAvailable(f"local Stable Diffusion folder '{path}' has no model_index.json (diffusers layout expected)")
    if not local.exists() and (path.startswith(("/", "./", "../")) or path.count("/") != 1):
        raise ModelNotAvailable(f"Stable Diffusion model '{path}' is not a local folder and not a hub id of the form org/name")


def load_sd_parts(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> SDParts:
    """Load tokenizer, text encoder, VAE, UNet and the training noise scheduler."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    _check_source(path)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype)
        noise_scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    except (OSError, ValueError) as error:
        raise _not_available(path, error) from None
    for module in (text_encoder, vae, unet):
        module.to(device)
        module.requires_grad_(False)
    return SDParts(tokenizer, text_encoder, vae, unet, noise_scheduler)


def load_sd_pipeline(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     scheduler: str | None = None):
    """A StableDiffusionPipeline, optionally with another diffusers scheduler class."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    _check_source(path)
    try:
        pipe = StableDiffusionPipeline.from_pretrained(path, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False)
    except (OSError, ValueError) as error:
        raise _not_available(path, error) from None
    if scheduler:
        scheduler_class = getattr(diffusers, scheduler, None)
        if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
            raise ValueError(f"synth.scheduler '{scheduler}' is not a diffusers scheduler class")
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device: str | torch.device) -> torch.Tensor:
    """Prompt embeddings padded to the tokenizer's length, as Stable Diffusion conditions on them."""
    tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                       truncation=True, return_tensors="pt").input_ids.to(device)
    return text_encoder(tokens)[0]
