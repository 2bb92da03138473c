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


def fuse_adapter(pipe, lora_dir: str) -> None:
    pipe.load_lora_weights(lora_dir)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers


def load_text2img(sd_path: str, lora_dir: str | None, settings: SamplingSettings, device: torch.device):
    pipe = load_sd_pipeline(sd_path, device=device, dtype=pipeline_dtype(settings, device), scheduler=settings.scheduler)
    if lora_dir is not None:
        fuse_adapter(pipe, lora_dir)
    return pipe


class AdapterSwitcher:
    """One pipeline per job; each class's adapter fused in turn, over the exact base weights.

    Unfusing subtracts the delta again and leaves rounding residue that would make a class's
    images depend on which classes shared its job, so the base weights are restored from a copy.
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.current: str | None = None
        self._base: dict[str, dict[str, torch.Tensor]] | None = None

    def _models(self):
        return {"unet": self.pipe.unet, "text_encoder": self.pipe.text_encoder}

    def use(self, lora_dir: str | None) -> None:
        if lora_dir == self.current:
            return
        if self.current is not None:
            for name, model in self._models().items():
                model.load_state_dict(self._base[name])
        if lora_dir is not None:
            if self._base is None:
                self._base = {name: {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                              for name, model in self._models().items()}
            fuse_adapter(self.pipe, lora_dir)
        self.current = lora_dir


def text2img_renderer(pipe, settings: SamplingSettings) -> Renderer:
    def render(prompts, generators, image_indices):
        with torch.inference_mode():
            return pipe(list(prompts), num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                        generator=list(generators), output_type="pil").images

    return render
