"""Stable Diffusion parts from a Hugging Face hub id or a local folder in diffusers layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from datadream_core.models import ModelNotAvailable
from datadream_core.models.hub import check_model_path, hub_offline, not_in_cache, require_cached_when_offline

# The half-precision settings (`mixed_precision`) of LoRA training, sampling and the classifier; LoRA weights
# stay fp32 under either.
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def compute_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The half dtype a `mixed_precision` setting computes in on `device`; None: fp32.

    On a GPU fp16 or bf16. On a CPU bf16 only: torch's CPU kernels support it (fast where the CPU has AMX or
    AVX-512 BF16), and a CPU run of a bf16 setting (the rehearsal) goes through the GPU's casting code; fp16 on
    a CPU would only be slow, so it runs in fp32.
    """
    if device.type == "cuda" or mixed_precision == "bf16":
        return HALF_DTYPES.get(mixed_precision)
    return None


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


SD_SETTING = "Stable Diffusion model (models.sd.path)"


def _source(path: str, revision: str | None) -> str:
    """What from_pretrained gets: the expanded local folder, or the hub id (offline: only when cached)."""
    if not check_model_path(path, SD_SETTING):
        require_cached_when_offline(path, revision, SD_SETTING)
        return path
    folder = Path(path).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ModelNotAvailable(f"local Stable Diffusion folder '{path}' has no model_index.json (diffusers layout expected)")
    return str(folder)


def _hub_options(revision: str | None) -> dict:
    """from_pretrained options: the pinned revision, and never the network when jobs run offline."""
    return {"revision": revision, "local_files_only": hub_offline()}


def load_sd_parts(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  revision: str | None = None) -> SDParts:
    """Load tokenizer, text encoder, VAE, UNet and the training noise scheduler (`revision`: of a hub id)."""
    source, hub = _source(path, revision), _hub_options(revision)
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **hub)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **hub)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", dtype=dtype, **hub)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", dtype=dtype, **hub)
        noise_scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **hub)
    except (OSError, ValueError) as error:
        raise not_in_cache(SD_SETTING, path, error) from None
    for module in (text_encoder, vae, unet):
        module.to(device)
        module.requires_grad_(False)
    return SDParts(tokenizer, text_encoder, vae, unet, noise_scheduler)


def load_sd_pipeline(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     scheduler: str | None = None, revision: str | None = None):
    """A StableDiffusionPipeline, optionally with another diffusers scheduler class (`revision`: of a hub id)."""
    source = _source(path, revision)
    import diffusers
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(source, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, **_hub_options(revision))
    except (OSError, ValueError) as error:
        raise not_in_cache(SD_SETTING, path, error) from None
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
