"""The released DataDream code's behaviour on each stage (ExplainableML/DataDream, commit a71515f), on the
same models and building blocks as our path, so a timing difference is the behaviour and nothing else.

- LoRA training (`DataDream/datadream.py`, section 2): every step decodes each image of the batch from disk,
  resizes its shorter side, random-crops in pixel space, VAE-encodes the crops and samples the latent
  (`vae.encode(x).latent_dist.sample() * scaling_factor`), and runs the text encoder on the prompt of every
  image of the batch.
- Generation (`generate/generate.py`, section 3): in mode cls the whole pipeline is loaded from disk again for
  every class, the class's LoRA is loaded with `load_lora_weights` and stays unfused (PEFT LoRA layers active
  at every denoising step, `cross_attention_kwargs={"scale": 1}`), and every image is resized and saved as PNG.
- Classifier (`classify/`, section 4): the text features of all C class prompts go through the text tower at
  the full context length in every forward pass, including every evaluation batch of 8; in training the text
  blocks run under gradient checkpointing (timm `checkpoint_seq`).
- FID (section 6; pytorch-fid): `scipy.linalg.sqrtm` of C1 C2 on the CPU.

Where the released code draws randomness differently (global RNG reseeded per class, unseeded crops), the
reference here draws the same numbers as our path, so the outputs can be compared; the work is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from datadream_core.classify.data import make_loader
from datadream_core.classify.train import _autocast, class_logits, text_features
from datadream_core.dream import LORA_FILE, denoising_loss
from datadream_core.synth.sampler import image_generator


# --- LoRA training -----------------------------------------------------------------------------------------

def released_crop(path: str, resolution: int, scale: int, latent_size: int, channels: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The released dataset's __getitem__ (load, Resize shorter side bilinear, RandomCrop, ToTensor, to [-1, 1]).

    The crop offset and the latent sample's noise are drawn as datadream_core.dream.sample_crop draws them
    (offsets on the VAE's pixel grid), so both paths see the same crops and the same latent samples.
    """
    from torchvision.transforms import functional as TF

    from datadream_core.data.images import load_rgb
    from datadream_core.dream import _resize_shorter_side

    image = _resize_shorter_side(load_rgb(path), resolution)
    height, width = image.height // scale, image.width // scale
    top = int(torch.randint(0, height - latent_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - latent_size + 1, (1,), generator=generator))
    eps = torch.randn((channels, latent_size, latent_size), generator=generator)
    pixels = TF.to_tensor(TF.crop(image, top * scale, left * scale, resolution, resolution)) * 2.0 - 1.0
    return pixels, eps


def reference_lora_step(parts, paths: Sequence[str], prompts: Sequence[str], resolution: int,
                        generator: torch.Generator, device: torch.device, params, optimizer, max_grad_norm: float,
                        half: torch.dtype | None = None) -> float:
    """One optimizer step as the released loop does it: VAE encode of the cropped pixels every step."""
    scale = parts.vae_scale
    crops = [released_crop(path, resolution, scale, resolution // scale, parts.vae.config.latent_channels, generator)
             for path in paths]
    pixels = torch.stack([pixels for pixels, _ in crops])
    eps = torch.stack([noise for _, noise in crops])
    with torch.autocast(device.type, dtype=half, enabled=half is not None):
        with torch.no_grad():
            dist = parts.vae.encode(pixels.to(device, parts.vae.dtype)).latent_dist
            latents = (dist.mean + dist.std * eps.to(device, dist.mean.dtype)) * parts.vae.config.scaling_factor
        tokens = parts.tokenizer(list(prompts), padding="max_length", max_length=parts.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(device)
        embeds = parts.text_encoder(tokens)[0]
        loss = denoising_loss(parts, latents.float().to(parts.unet.dtype), embeds, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return loss.detach().item()


# --- generation --------------------------------------------------------------------------------------------

def reference_generate(sd_path: str, adapters: Sequence[str], prompts: Sequence[str], n_images: int, seed: int,
                       steps: int, guidance_scale: float, batch_size: int, dtype: torch.dtype, device: torch.device,
                       out_dir: Path) -> list[Path]:
    """generate.py in mode cls: reload the pipeline per class, load the class LoRA unfused, sample, save PNGs."""
    from diffusers import StableDiffusionPipeline

    written = []
    for class_index, (adapter, prompt) in enumerate(zip(adapters, prompts)):
        pipe = StableDiffusionPipeline.from_pretrained(sd_path, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(device)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(adapter, weight_name=LORA_FILE)
        folder = out_dir / f"c{class_index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        for start in range(0, n_images, batch_size):
            indices = list(range(start, min(n_images, start + batch_size)))
            generators = [image_generator(seed, class_index, i) for i in indices]
            with torch.no_grad():
                images = pipe([prompt] * len(indices), num_inference_steps=steps, guidance_scale=guidance_scale,
                              generator=generators, cross_attention_kwargs={"scale": 1.0}).images
            for index, image in zip(indices, images):
                path = folder / f"{index}.png"
                image.resize((size, size)).save(path)
                written.append(path)
        del pipe
    return written


# --- classifier --------------------------------------------------------------------------------------------

@torch.no_grad()
def reference_evaluate(model, full_tokens: torch.Tensor, examples, transform, scale: float, device: torch.device,
                       mixed_precision: str, batch_size: int = 8, workers: int = 0) -> torch.Tensor:
    """The released evaluation: bs 8, and the text features of all classes recomputed in every batch."""
    model.eval()
    predictions = []
    for images, _, _ in make_loader(examples, transform, batch_size, workers):
        with _autocast(device, mixed_precision):
            texts = text_features(model, full_tokens)
            predictions.append(class_logits(model, images.to(device), texts, scale).argmax(dim=-1).cpu())
    return torch.cat(predictions)


def set_text_checkpointing(model, enabled: bool) -> None:
    """The released classifier runs its text blocks under timm checkpoint_seq (always on)."""
    model.transformer.grad_checkpointing = enabled


# --- FID ---------------------------------------------------------------------------------------------------

def reference_frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's calculate_frechet_distance (scipy.linalg.sqrtm of sigma1 @ sigma2)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def reference_train_lora(sd_path: str, examples, settings, seed: int, scope: int, device: torch.device,
                         out_dir: Path, half: torch.dtype | None = None) -> list[float]:
    """datadream.py's loop on our schedule, order, LoRA init and per-step randomness, with the released
    per-step work: pixels decoded, resized, cropped and VAE-encoded every step, text encoder on every prompt.
    `half`: the frozen weights in that dtype, the steps under autocast."""
    import math

    from datadream_core.dream import add_lora, learning_rate_schedule, save_lora, step_generator
    from datadream_core.models.sd import load_sd_parts

    parts = load_sd_parts(sd_path, device=device, dtype=half or torch.float32)
    resolution = settings.resolution or parts.resolution
    torch.manual_seed(int(np.random.SeedSequence([seed, scope]).generate_state(1)[0]))
    params = add_lora(parts, settings)
    parts.unet.train()
    parts.text_encoder.train(settings.train_text_encoder)
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2),
                                  weight_decay=settings.weight_decay, eps=settings.adam_epsilon)
    lr_schedule = learning_rate_schedule(optimizer, settings, total_steps)
    losses = []
    for step in range(total_steps):
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, scope, epoch]).permutation(len(examples))
        batch = [examples[i] for i in order[position * settings.batch_size:(position + 1) * settings.batch_size]]
        losses.append(reference_lora_step(parts, [e.path for e in batch], [e.prompt for e in batch], resolution,
                                          step_generator(seed, scope, step), device, params, optimizer,
                                          settings.max_grad_norm, half=half))
        lr_schedule.step()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_lora(parts, settings, out_dir)
    return losses
