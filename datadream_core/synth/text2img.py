"""Text-to-image generators: `sd` (the unadapted model) and DataDream (`datadream_dset`, `datadream_cls`).

The pipeline is loaded once per job; a DataDream adapter is fused into the weights so sampling
costs the same as the base model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from datadream_core.models.sd import load_sd_pipeline
from datadream_core.synth.sampler import Renderer

HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = 50
    guidance_scale: float = 2.0
    scheduler: str | None = None
    batch_size: int = 10
    mixed_precision: str = "fp16"


def pipeline_dtype(settings: SamplingSettings, device: torch.device) -> torch.dtype:
    return HALF_DTYPES.get(settings.mixed_precision, torch.float32) if device.type == "cuda" else torch.float32


def load_text2img(sd_path: str, lora_dir: str | None, settings: SamplingSettings, device: torch.device):
    pipe = load_sd_pipeline(sd_path, device=device, dtype=pipeline_dtype(settings, device), scheduler=settings.scheduler)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir)
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    return pipe


def text2img_renderer(pipe, settings: SamplingSettings) -> Renderer:
    def render(prompts, generators, image_indices):
        with torch.inference_mode():
            return pipe(list(prompts), num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                        generator=list(generators), output_type="pil").images

    return render
