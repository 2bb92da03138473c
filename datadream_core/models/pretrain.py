"""Pretraining the miniature world's base models from scratch, on SOURCE images and captions.

Three plain functions, one per model, each seeded and reproducible on a given machine and thread count:
* `train_vae`: the tiny AutoencoderKL (f=2) as an image codec (MSE + L1 + a small KL);
* `train_sd`: the tiny UNet2DConditionModel and CLIPTextModel jointly, on VAE latents, with
  v-prediction and SD's scaled_linear betas (epsilon-prediction gives noise at this size: miniworld
  notes), 10 % empty captions for classifier-free guidance and an optional EMA;
* `train_clip`: the tiny open_clip CLIP, contrastively, with multi-positive soft targets (a caption
  is a positive for every image in the batch it describes, so duplicate captions are not negatives).
All randomness of step s of a stage comes from a generator seeded with (seed, stage, s).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datadream_core.io import LOG
from datadream_core.jobs import progress
from datadream_core.seeding import seed_from, seeded_generator, seeded_rng

STAGE_VAE, STAGE_SD, STAGE_CLIP = 1, 2, 3


def _manual_seed(seed: int, stage: int) -> None:
    torch.manual_seed(seed_from(seed, stage, 10**6))


def _batch(seed: int, stage: int, step: int, count: int, batch_size: int) -> np.ndarray:
    """The indices of step `step`: epochs are seeded permutations, walked batch by batch."""
    per_epoch = max(1, count // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = seeded_rng(seed, stage, epoch).permutation(count)
    return order[position * batch_size:(position + 1) * batch_size]


@dataclass(frozen=True, kw_only=True)
class StageBudget:
    """What every stage's optimisation takes: AdamW for `steps` steps, warm-up then cosine decay, clipped gradients.
    The stages' settings add their losses' and augmentations' own; BuildBudget gives each stage its numbers."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0


def _warmup_cosine(optimizer, steps: int, warmup_fraction: float):
    warmup = max(1, int(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], as the VAE sees images."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# --------------------------------------------------------------------------------------------- VAE
@dataclass(frozen=True, kw_only=True)
class VAESettings(StageBudget):
    l1_weight: float = 0.5
    kl_weight: float = 1e-6


class _StageOptimisation:
    """A stage's optimiser, schedule, progress bar and loss rows, made from its budget."""

    def __init__(self, parameters, budget: StageBudget, name: str):
        self.parameters = list(parameters)
        self.max_grad_norm = budget.max_grad_norm
        self.optimizer = torch.optim.AdamW(self.parameters, lr=budget.learning_rate, weight_decay=budget.weight_decay)
        self.schedule = _warmup_cosine(self.optimizer, budget.steps, budget.warmup_fraction)
        self.bar = progress(budget.steps, name, unit="step")
        self.losses: list[tuple] = []

    def update(self, loss: torch.Tensor) -> None:
        """One optimiser step on `loss` with gradient clipping, then one learning-rate schedule step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()

    def record(self, row: tuple, **shown: str) -> None:
        """Keep one step's losses and show `shown` on the progress bar."""
        self.losses.append(row)
        self.bar.update(1)
        self.bar.set_postfix(**shown, refresh=False)

    def finish(self) -> list[tuple]:
        self.bar.close()
        return self.losses


def _frozen(*modules: torch.nn.Module) -> None:
    """Trained modules in inference mode, without gradients."""
    for module in modules:
        module.eval()
        module.requires_grad_(False)


def train_vae(images: np.ndarray, settings: VAESettings, seed: int) -> tuple[torch.nn.Module, list[tuple]]:
    """Train the tiny AutoencoderKL on uint8 images; returns the model (eval mode) and (step, loss, mse) rows."""
    from datadream_core.models.tiny import tiny_vae

    _manual_seed(seed, STAGE_VAE)
    vae = tiny_vae()
    vae.train()
    optimisation = _StageOptimisation(vae.parameters(), settings, "VAE")
    for step in range(settings.steps):
        generator = seeded_generator(seed, STAGE_VAE, step)
        pixels = to_pixels(images[_batch(seed, STAGE_VAE, step, len(images), settings.batch_size)])
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction, pixels)
        loss = mse + settings.l1_weight * F.l1_loss(reconstruction, pixels) + settings.kl_weight * posterior.kl().mean()
        optimisation.update(loss)
        optimisation.record((step, loss.item(), mse.item()), mse=f"{mse.item():.4f}")
    losses = optimisation.finish()
    _frozen(vae)
    return vae, losses


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled latent means and stds of uint8 images."""
    means, stds = [], []
    for begin in range(0, len(images), batch_size):
        posterior = vae.encode(to_pixels(images[begin:begin + batch_size])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_psnr(vae, images: np.ndarray, batch_size: int = 256) -> float:
    """PSNR in dB of the VAE's mean reconstruction, pixels in [0, 255]."""
    errors = []
    for begin in range(0, len(images), batch_size):
        pixels = to_pixels(images[begin:begin + batch_size])
        reconstruction = vae.decode(vae.encode(pixels).latent_dist.mean).sample.clamp(-1, 1)
        errors.append(((reconstruction - pixels) * 127.5).pow(2).mean(dim=(1, 2, 3)))
    return float(10 * torch.log10(255.0**2 / torch.cat(errors).mean()))


def scaling_factor(means: torch.Tensor, stds: torch.Tensor, seed: int, count: int = 4096) -> float:
    """1 / std of latent samples over a shuffled subset, as SD scales its latents to unit variance."""
    generator = seeded_generator(seed, STAGE_VAE, -1 % 2**31)
    pick = torch.randperm(len(means), generator=generator)[:count]
    samples = means[pick] + stds[pick] * torch.randn(means[pick].shape, generator=generator)
    return float(1.0 / samples.std())


# ---------------------------------------------------------------------- UNet + text encoder (SD)
@dataclass(frozen=True, kw_only=True)
class SDSettings(StageBudget):
    empty_caption_prob: float = 0.1
    ema_decay: float = 0.999  # 0 turns the EMA off
    hflip: bool = True


class EMA:
    """An exponential moving average of parameters with a warm-up decay, capped at `decay`."""

    def __init__(self, modules: Sequence[torch.nn.Module], decay: float):
        self.decay = decay
        self.shadow = [copy.deepcopy(module).requires_grad_(False) for module in modules]
        self.updates = 0

    @torch.no_grad()
    def update(self, modules: Sequence[torch.nn.Module]) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, module in zip(self.shadow, modules):
            for averaged, current in zip(shadow.parameters(), module.parameters()):
                averaged.lerp_(current.detach(), 1 - decay)


def tokenize(tokenizer, captions: Sequence[str]) -> torch.Tensor:
    return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def train_sd(vae, tokenizer, images: np.ndarray, captions: Sequence[str], settings: SDSettings, seed: int,
             latents: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Train a fresh tiny UNet and text encoder on (image, caption) pairs through a trained, frozen `vae`.

    Returns (unet, text_encoder, scheduler, losses): the EMA weights when `settings.ema_decay` > 0.
    """
    from datadream_core.models.tiny import tiny_sd_scheduler, tiny_text_encoder, tiny_unet

    if latents is None:
        latents = encode_latents(vae, images)
    means, stds = latents
    scale = vae.config.scaling_factor
    means, stds = means * scale, stds * scale
    tokens = tokenize(tokenizer, captions)
    empty = tokenize(tokenizer, [""])[0]
    scheduler = tiny_sd_scheduler("v_prediction")
    alphas = scheduler.alphas_cumprod

    _manual_seed(seed, STAGE_SD)
    unet, text_encoder = tiny_unet(), tiny_text_encoder(tokenizer)
    modules = [unet, text_encoder]
    for module in modules:
        module.train()
    optimisation = _StageOptimisation((p for module in modules for p in module.parameters()), settings,
                                      "SD UNet + text encoder")
    ema = EMA(modules, settings.ema_decay) if settings.ema_decay > 0 else None
    for step in range(settings.steps):
        generator = seeded_generator(seed, STAGE_SD, step)
        batch = torch.from_numpy(_batch(seed, STAGE_SD, step, len(means), settings.batch_size))
        x0 = means[batch] + stds[batch] * torch.randn(means[batch].shape, generator=generator)
        if settings.hflip:
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        ids = tokens[batch].clone()
        ids[torch.rand(len(batch), generator=generator) < settings.empty_caption_prob] = empty
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=generator)
        a = alphas[timesteps].sqrt()[:, None, None, None]
        s = (1 - alphas[timesteps]).sqrt()[:, None, None, None]
        noisy, velocity = a * x0 + s * noise, a * noise - s * x0
        prediction = unet(noisy, timesteps, text_encoder(ids)[0]).sample
        loss = F.mse_loss(prediction, velocity)
        optimisation.update(loss)
        if ema:
            ema.update(modules)
        optimisation.record((step, loss.item()), loss=f"{loss.item():.4f}")
    losses = optimisation.finish()
    if ema:
        unet, text_encoder = ema.shadow
    _frozen(unet, text_encoder)
    return unet, text_encoder, scheduler, losses


# -------------------------------------------------------------------------------------------- CLIP
@dataclass(frozen=True, kw_only=True)
class CLIPSettings(StageBudget):
    pad: int = 2  # random translation by up to `pad` pixels (pad + crop)
    hflip: bool = True


def clip_pixels(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _augment(pixels: torch.Tensor, pad: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = pixels.shape
    if pad:
        padded = F.pad(pixels, (pad, pad, pad, pad), mode="replicate")
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        pixels = torch.stack([padded[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(offsets.tolist())])
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    return pixels


def multi_positive_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss whose targets spread over every true (image, caption) pair."""
    truth = truth.float()
    image_to_text = -(truth / truth.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(truth / truth.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (image_to_text + text_to_image) / 2


def train_clip(source, settings: CLIPSettings, seed: int):
    """Train a fresh tiny open_clip CLIP on a `miniworld.SourceData`; returns (model, losses)."""
    import open_clip

    from datadream_core.models.tiny import TINY_CLIP, tiny_clip_model

    _manual_seed(seed, STAGE_CLIP)
    model = tiny_clip_model(seed_from(seed, STAGE_CLIP))
    model.train()
    tokens = open_clip.tokenize(source.captions, context_length=TINY_CLIP["text_cfg"]["context_length"])
    pixels = clip_pixels(source.images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    optimisation = _StageOptimisation(model.parameters(), settings, "CLIP")
    for step in range(settings.steps):
        generator = seeded_generator(seed, STAGE_CLIP, step)
        batch = _batch(seed, STAGE_CLIP, step, len(tokens), settings.batch_size)
        images = _augment(pixels[torch.from_numpy(batch)], settings.pad, settings.hflip, generator)
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(tokens[torch.from_numpy(batch)]), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = multi_positive_loss(logits, torch.from_numpy(source.truth(batch, batch)))
        optimisation.update(loss)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        optimisation.record((step, loss.item()), loss=f"{loss.item():.3f}")
    losses = optimisation.finish()
    _frozen(model)
    return model, losses


@torch.no_grad()
def clip_zero_shot(model, images: np.ndarray, labels: np.ndarray, prompts: Sequence[str], batch_size: int = 512) -> float:
    """Zero-shot top-1 accuracy in percent of `model` on uint8 images with one prompt per class."""
    import open_clip

    from datadream_core.models.tiny import TINY_CLIP

    text = F.normalize(model.encode_text(open_clip.tokenize(list(prompts), context_length=TINY_CLIP["text_cfg"]["context_length"])), dim=-1)
    correct = 0
    for begin in range(0, len(images), batch_size):
        pixels = clip_pixels(images[begin:begin + batch_size], open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
        predicted = (F.normalize(model.encode_image(pixels), dim=-1) @ text.T).argmax(1).numpy()
        correct += int((predicted == labels[begin:begin + batch_size]).sum())
    return 100.0 * correct / max(1, len(images))


@torch.no_grad()
def sample_sd(vae, unet, text_encoder, tokenizer, scheduler, prompts: Sequence[str], seed: int, steps: int = 25,
              guidance_scale: float = 2.0) -> np.ndarray:
    """uint8 (N, H, W, 3) samples with DDIM and classifier-free guidance (for checks; the workflow uses the pipeline)."""
    from diffusers import DDIMScheduler

    sampler = DDIMScheduler.from_config(scheduler.config)
    sampler.set_timesteps(steps)
    ids = tokenize(tokenizer, list(prompts) + [""])
    embeds = text_encoder(ids)[0]
    conditional, unconditional = embeds[:-1], embeds[-1:].expand(len(prompts), -1, -1)
    size = unet.config.sample_size
    x = torch.randn((len(prompts), 4, size, size), generator=torch.Generator().manual_seed(seed))
    for t in sampler.timesteps:
        both = unet(torch.cat([x, x]), t, torch.cat([conditional, unconditional])).sample
        cond, uncond = both.chunk(2)
        x = sampler.step(uncond + guidance_scale * (cond - uncond), t, x).prev_sample
    pixels = vae.decode(x / vae.config.scaling_factor).sample.clamp(-1, 1)
    return ((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def timed(function, *args, **kwargs):
    """(result, wall seconds) of a call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


__all__ = ["VAESettings", "SDSettings", "CLIPSettings", "train_vae", "train_sd", "train_clip", "encode_latents",
           "reconstruction_psnr", "scaling_factor", "clip_zero_shot", "sample_sd", "multi_positive_loss", "LOG"]
