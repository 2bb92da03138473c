"""Text-to-image generators: `sd` (the unadapted model), DataDream (`datadream_dset`, `datadream_cls`) and
LoFT (`loft`, synth.loft).

The pipeline is loaded once per job; an adapter is merged into the weights it targets (W + up @ down, new
tensors beside the model's own, which stay the untouched base), so sampling costs the same as the base model and
switching to the next class's adapter costs one pass over the targeted weights, not a pipeline reload. A class
prompt is encoded once per class, so the text encoder carries the class's adapter only while it encodes, and a
job holds one set of merged weights at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file

from datadream_core.layout import LORA_FILE
from datadream_core.models.sd import compute_dtype, load_sd_pipeline
from datadream_core.synth.sampler import Renderer


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = 50
    guidance_scale: float = 2.0
    scheduler: str | None = None
    batch_size: int = 10
    mixed_precision: str = "fp16"


def pipeline_dtype(settings: SamplingSettings, device: torch.device) -> torch.dtype:
    return compute_dtype(settings.mixed_precision, device) or torch.float32


def load_text2img(sd_path: str, settings: SamplingSettings, device: torch.device, revision: str | None = None):
    """The base pipeline; adapters are merged into it by an AdapterSwitcher."""
    return load_sd_pipeline(sd_path, device=device, dtype=pipeline_dtype(settings, device),
                            scheduler=settings.scheduler, revision=revision)


Factors = dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]  # (model, module) -> (down, up)
# diffusers' LoRA file format: {model}.{module}.lora.{down|up}.weight (text encoder: lora_linear_layer).
_LORA_KEY = re.compile(r"(unet|text_encoder)\.(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight")


def load_lora_factors(lora_dir: str | Path, device: torch.device) -> Factors:
    """(model, module) -> (down, up) of an adapter file in diffusers' format; its delta is up @ down.

    Our files carry no alphas, which diffusers reads as alpha = rank (scale 1); so do we.
    """
    path = Path(lora_dir) / LORA_FILE
    factors: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in load_file(path).items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"{path}: '{key}' is not a LoRA weight in diffusers' format"
                             " (model.module.lora.down|up.weight)")
        model, module, side = match.groups()
        factors.setdefault((model, module), {})[side] = value.to(device, torch.float32)
    incomplete = sorted(".".join(key) for key, sides in factors.items() if len(sides) != 2)
    if incomplete:
        raise ValueError(f"{path}: {incomplete[0]} has only one of its down / up weights")
    return {key: (sides["down"], sides["up"]) for key, sides in factors.items()}


class BaseWeights:
    """The base weights of the modules that adapters change, kept to merge adapters over them exactly.

    A merge gives each changed module a new weight tensor, W + the adapters' deltas, and keeps the model's
    original tensor W untouched as the base, so nothing is copied to remember it (on a CPU it stays memory-mapped
    from the model file) and going back to the base model is exact and free. Unmerging instead would subtract the
    delta again and leave rounding residue that made a class's images depend on which classes shared its job.
    The merged tensors of the modules a LoRA touches (the attention projections, a fraction of the model) are
    the one copy of weights a job holds beyond the model.
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.weights: dict[tuple[str, str], torch.Tensor] = {}

    def module(self, model_name: str, module_name: str) -> torch.nn.Module:
        try:
            module = getattr(self.pipe, model_name).get_submodule(module_name)
        except AttributeError:
            raise ValueError(f"the adapter changes {model_name}.{module_name}, which this Stable Diffusion model "
                             "does not have (an adapter of another model?)") from None
        return module.get_base_layer() if hasattr(module, "get_base_layer") else module

    def remember(self, model_name: str, module_name: str) -> None:
        """Keep the module's weight as its base; call before any merge changes it."""
        if (model_name, module_name) not in self.weights:
            self.weights[(model_name, module_name)] = self.module(model_name, module_name).weight.detach()

    def write(self, terms: Sequence[tuple[Factors, float]] = (), model: str | None = None) -> None:
        """Make every remembered weight (of `model` alone, if given) W + the sum of share * up @ down over `terms`
        (adapter, share), from the exact base W; a module that no term changes gets W itself back, and its merged
        tensor is freed."""
        with torch.no_grad():
            for key, base in self.weights.items():
                if model is not None and key[0] != model:
                    continue
                merged = base
                for factors, share in terms:
                    if key in factors:
                        down, up = factors[key]
                        merged = merged.float() + share * (up @ down)
                self.module(*key).weight.data = merged.to(base.dtype)


@dataclass(frozen=True)
class PromptEmbeddings:
    """A class prompt as the UNet sees it, and the empty prompt's embeddings that classifier-free guidance uses."""

    prompt: str
    positive: torch.Tensor
    negative: torch.Tensor


def encode_class_prompt(pipe, prompt: str) -> PromptEmbeddings:
    """`prompt` through the pipeline's text encoder as it is now (the pipeline's own encode_prompt)."""
    with torch.inference_mode():
        positive, negative = pipe.encode_prompt(prompt, pipe.unet.device, 1, True)
    return PromptEmbeddings(prompt, positive, negative)


class AdapterSwitcher:
    """One pipeline per job; each class's adapter merged in turn over the exact base weights (BaseWeights).

    The merge is diffusers' fuse_lora (W + scale * up @ down, scale 1 for our files) written directly, without
    loading the adapter as PEFT layers first: that load, fuse and unload cost more than a pipeline reload.
    A class's prompt is encoded once, with the adapter in the text encoder; the text encoder then goes back to
    its base weights, and a new adapter frees the previous one's merged UNet weights first, so a switch holds the
    merged weights of one model at a time (classes that share an adapter hold the UNet's while they encode).
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.current: tuple[str | None, str] | None = None
        self.embeddings: PromptEmbeddings | None = None
        self._terms: list[tuple[Factors, float]] = []
        self._base = BaseWeights(pipe)

    def use(self, lora_dir: str | None, prompt: str) -> PromptEmbeddings:
        """Merge `lora_dir`'s adapter (None: the base model) and return `prompt` encoded with it. Classes that share
        an adapter (datadream_dset) keep its merged UNet weights and only encode their own prompt."""
        if (lora_dir, prompt) == self.current:
            return self.embeddings
        new_adapter = self.current is None or self.current[0] != lora_dir
        if new_adapter:
            self._base.write(model="unet")
            self._terms = []
            if lora_dir is not None:
                factors = load_lora_factors(lora_dir, self.pipe.unet.device)
                for key in factors:
                    self._base.remember(*key)
                self._terms = [(factors, 1.0)]
        self._base.write(self._terms, model="text_encoder")
        self.embeddings = encode_class_prompt(self.pipe, prompt)
        self._base.write(model="text_encoder")
        if new_adapter:
            self._base.write(self._terms, model="unet")
        self.current = (lora_dir, prompt)
        return self.embeddings


def text2img_renderer(pipe, settings: SamplingSettings, embeddings: PromptEmbeddings | None = None) -> Renderer:
    """Images of the prompts asked for: from `embeddings` (one class's prompt, encoded by AdapterSwitcher.use), or
    else encoded per batch by the pipeline's text encoder as it is then."""

    def render(prompts, generators, image_indices):
        prompts = list(prompts)
        if embeddings is None:
            conditioning = {"prompt": prompts}
        elif set(prompts) == {embeddings.prompt}:
            conditioning = {"prompt_embeds": embeddings.positive.expand(len(prompts), -1, -1),
                            "negative_prompt_embeds": embeddings.negative.expand(len(prompts), -1, -1)}
        else:
            raise ValueError(f"this renderer has the embeddings of '{embeddings.prompt}', not of {sorted(set(prompts))}")
        with torch.inference_mode():
            return pipe(**conditioning, num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                        generator=list(generators), output_type="pil").images

    return render
