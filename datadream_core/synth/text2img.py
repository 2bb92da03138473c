"""Text-to-image generators: `sd` (the unadapted model), DataDream (`datadream_dset`, `datadream_cls`) and
LoFT (`loft`, synth.loft).

The pipeline is loaded once per job; a DataDream adapter is fused into the weights so sampling
costs the same as the base model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from datadream_core.models.sd import HALF_DTYPES, load_sd_pipeline
from datadream_core.synth.sampler import Renderer


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = 50
    guidance_scale: float = 2.0
    scheduler: str | None = None
    batch_size: int = 10
    mixed_precision: str = "fp16"


def pipeline_dtype(settings: SamplingSettings, device: torch.device) -> torch.dtype:
    return HALF_DTYPES.get(settings.mixed_precision, torch.float32) if device.type == "cuda" else torch.float32


def fuse_loaded_adapter(pipe) -> None:
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers


def load_text2img(sd_path: str, settings: SamplingSettings, device: torch.device, revision: str | None = None):
    """The base pipeline; adapters are fused into it by an AdapterSwitcher."""
    return load_sd_pipeline(sd_path, device=device, dtype=pipeline_dtype(settings, device),
                            scheduler=settings.scheduler, revision=revision)


class BaseWeights:
    """Copies of the base weights of the modules that adapters change, to write them back exactly.

    Unfusing subtracts the delta again and leaves rounding residue that would make a class's images
    depend on which classes shared its job, so the base weights are restored from a copy. Only the
    weights a LoRA touches are copied (the attention projections, a fraction of the model).
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.weights: dict[tuple[str, str], torch.Tensor] = {}

    def module(self, model_name: str, module_name: str) -> torch.nn.Module:
        module = getattr(self.pipe, model_name).get_submodule(module_name)
        return module.get_base_layer() if hasattr(module, "get_base_layer") else module

    def remember(self, model_name: str, module_name: str) -> None:
        if (model_name, module_name) not in self.weights:
            self.weights[(model_name, module_name)] = self.module(model_name, module_name).weight.detach().clone()

    def restore(self) -> None:
        with torch.no_grad():
            for key, weight in self.weights.items():
                self.module(*key).weight.copy_(weight)


class AdapterSwitcher:
    """One pipeline per job; each class's adapter fused in turn, over the exact base weights (BaseWeights)."""

    MODELS = ("unet", "text_encoder")

    def __init__(self, pipe):
        self.pipe = pipe
        self.current: str | None = None
        self._base = BaseWeights(pipe)

    def _remember_base_weights(self) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for model_name in self.MODELS:
            for module_name, module in getattr(self.pipe, model_name).named_modules():
                if isinstance(module, BaseTunerLayer):
                    self._base.remember(model_name, module_name)

    def use(self, lora_dir: str | None) -> None:
        if lora_dir == self.current:
            return
        if self.current is not None:
            self._base.restore()
        if lora_dir is not None:
            self.pipe.load_lora_weights(lora_dir)
            self._remember_base_weights()
            fuse_loaded_adapter(self.pipe)
        self.current = lora_dir


def text2img_renderer(pipe, settings: SamplingSettings) -> Renderer:
    def render(prompts, generators, image_indices):
        with torch.inference_mode():
            return pipe(list(prompts), num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                        generator=list(generators), output_type="pil").images

    return render
