"""DataDream: LoRA fine-tuning of Stable Diffusion on the few-shot images (modes dset and cls).

LoRA sits on the attention projections of the text encoder (q, k, v, out_proj) and of every UNet
attention, self and cross (to_q, to_k, to_v, to_out.0); everything else is frozen. The loss is the
plain denoising MSE against the noise or the velocity, whichever the scheduler predicts. LoFT's
per-image adapters are the same training with other settings (one image, rank 2, UNet only, centre crop).

Each few-shot image is resized once and encoded once by the VAE; random (or centre) crops are taken in
latent space (offsets on the VAE's pixel grid) and a fresh latent sample is drawn from the cached
distribution at every step, so no step re-runs the VAE. All randomness of step s comes from a
generator seeded with (seed, scope, s): a run resumed from a checkpoint continues exactly.

`train_datadream` is the training script, top to bottom; `train_adapters` runs it for each adapter of a job.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datadream_core.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from datadream_core.data.fewshot import Shot, read_fewshot
from datadream_core.data.images import load_rgb
from datadream_core.config import SPEED_ONLY_KEYS, settings_dataclass
from datadream_core.data.table import prompts_of, read_classes
from datadream_core.identity import digest, provenance_or_location
from datadream_core.io import FILE_MODE, LOG, read_json, write_csv, write_json
from datadream_core.jobs import progress
from datadream_core.layout import ADAPTER_FILES, LORA_FILE, adapter_folders
from datadream_core.models.sd import SDParts, compute_dtype, encode_prompts, load_sd_parts
from datadream_core.seeding import seed_from, seeded_generator, seeded_rng

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
# A finished adapter's files, hard-linked here until its whole chunk is done (see train_adapters).
FINISHED_DIR = ".finished"
LOSSES_FILE = "losses.csv"
FINISHED_FILES = ADAPTER_FILES + (LOSSES_FILE,)
CROPS = ("random", "center")
# What separates the randomness of adapters trained with one seed: 0 (dset), class + 1 (cls),
# (class + 1, rank + 1) for the per-image adapter of the class's shot `rank`.
Scope = int | tuple[int, ...]


@dataclass(frozen=True)
class DreamSettings:
    rank: int = 16
    alpha: float = 16
    train_text_encoder: bool = True
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    batch_size: int = 8
    epochs: int = 200
    lr_scheduler: str = "cosine"
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    resolution: int | None = None
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    crop: str = "random"


@dataclass(frozen=True)
class Example:
    """One few-shot training image and the prompt of its class."""

    path: str
    prompt: str


def checkpoint_identity(provenance: Mapping[str, str], examples: Sequence[Example], settings: DreamSettings, seed: int,
                        scope: Scope) -> str:
    """Everything that determines the adapter; a checkpoint is resumed only if it was made from the same."""
    determining = {key: value for key, value in asdict(settings).items() if key not in SPEED_ONLY_KEYS["dream"]}
    return digest(dict(provenance), [[example.path, example.prompt] for example in examples], determining, seed, scope)


def entropy(seed: int, scope: Scope, *more: int) -> list[int]:
    return [seed, *(scope if isinstance(scope, tuple) else (scope,)), *more]


def step_generator(seed: int, scope: Scope, step: int) -> torch.Generator:
    return seeded_generator(*entropy(seed, scope, step))


def add_lora(parts: SDParts, settings: DreamSettings) -> list[torch.nn.Parameter]:
    """Attach fresh LoRA adapters (gaussian init, no dropout) and return the trainable parameters."""
    from peft import LoraConfig

    def config(targets):
        return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, init_lora_weights="gaussian",
                          lora_dropout=0.0, target_modules=list(targets))

    parts.unet.add_adapter(config(UNET_LORA_TARGETS))
    models = [parts.unet]
    if settings.train_text_encoder:
        parts.text_encoder.add_adapter(config(TEXT_LORA_TARGETS))
        models.append(parts.text_encoder)
    params = [p for model in models for name, p in model.named_parameters() if "lora_" in name]
    for param in params:
        param.requires_grad_(True)
        param.data = param.data.float()  # LoRA weights stay fp32 under half-precision autocast
    return params


def adapted_modules(model: torch.nn.Module) -> set[str]:
    """Names of the modules that carry a LoRA adapter."""
    return {name for name, module in model.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)}


@dataclass
class LatentImage:
    """The VAE's latent distribution of one resized image; crops are taken from it."""

    mean: torch.Tensor  # (C, h, w), already multiplied by the VAE scaling factor
    std: torch.Tensor


def _resize_shorter_side(image, size: int):
    from torchvision.transforms import functional as TF
    from torchvision.transforms import InterpolationMode

    return TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


@torch.no_grad()
def encode_images(parts: SDParts, paths: Sequence[str], resolution: int, device: torch.device) -> list[LatentImage]:
    from torchvision.transforms import functional as TF

    vae = parts.vae
    scaling = vae.config.scaling_factor
    encoded = []
    for path in paths:
        pixels = TF.to_tensor(_resize_shorter_side(load_rgb(path), resolution)) * 2.0 - 1.0
        dist = vae.encode(pixels[None].to(device, vae.dtype)).latent_dist
        encoded.append(LatentImage((dist.mean[0] * scaling).float().cpu(), (dist.std[0] * scaling).float().cpu()))
    return encoded


def sample_crop(latent: LatentImage, size: int, generator: torch.Generator, crop: str = "random") -> torch.Tensor:
    """A size x size latent crop (random or centred, `crop`), sampled from the cached distribution."""
    _, height, width = latent.mean.shape
    if crop == "random":
        top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    else:  # rounded as torchvision's CenterCrop does
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    mean = latent.mean[:, top:top + size, left:left + size]
    std = latent.std[:, top:top + size, left:left + size]
    return mean + std * torch.randn(mean.shape, generator=generator)


def denoising_loss(parts: SDParts, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, parts.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator).to(latents.device)
    return F.mse_loss(*prediction_and_target(parts, latents, noise, timesteps, prompt_embeds))


def prediction_and_target(parts: SDParts, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                          prompt_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The UNet's prediction for the noised latents and what it should be (the noise or the velocity, whichever
    the scheduler predicts), both in float32."""
    scheduler = parts.noise_scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type '{prediction_type}' in the model's scheduler config")
    prediction = parts.unet(noisy.to(parts.unet.dtype), timesteps, prompt_embeds.to(parts.unet.dtype)).sample
    return prediction.float(), target.float()


def learning_rate_schedule(optimizer, settings: DreamSettings, total_steps: int):
    from diffusers.optimization import get_scheduler

    return get_scheduler(settings.lr_scheduler, optimizer, num_warmup_steps=settings.warmup_steps,
                         num_training_steps=total_steps)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_lora(parts: SDParts, settings: DreamSettings, out_dir: Path) -> Path:
    """Write the adapters in diffusers' format, loadable by StableDiffusionPipeline.load_lora_weights."""
    from peft.utils import get_peft_model_state_dict

    return write_lora_file(out_dir, get_peft_model_state_dict(parts.unet), settings.alpha / settings.rank,
                           get_peft_model_state_dict(parts.text_encoder) if settings.train_text_encoder else None)


def write_lora_file(out_dir: Path, unet_layers: Mapping[str, torch.Tensor], scale: float,
                    text_encoder_layers: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write LoRA factors keyed as peft names them (`<module>.lora_A.weight`, `.lora_B.weight`) to `out_dir`'s
    adapter file in diffusers' format.

    The file holds no alphas, which loaders (diffusers, text2img.load_lora_factors) read as alpha = rank: the up
    factors are written times the trained scale alpha / rank, so the file's delta is the one trained.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    def layers(state):
        return convert_state_dict_to_diffusers({key: (value.detach().float() * (scale if ".lora_B." in key else 1.0)).contiguous()
                                                for key, value in state.items()})

    target = out_dir / LORA_FILE
    staging = Path(tempfile.mkdtemp(prefix=".lora.", dir=out_dir))  # diffusers writes into a folder
    try:
        StableDiffusionPipeline.save_lora_weights(
            staging, unet_lora_layers=layers(unet_layers),
            text_encoder_lora_layers=layers(text_encoder_layers) if text_encoder_layers is not None else None,
            weight_name=LORA_FILE, safe_serialization=True)
        os.chmod(staging / LORA_FILE, FILE_MODE)
        os.replace(staging / LORA_FILE, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def total_steps(n_examples: int, settings: DreamSettings) -> int:
    return settings.epochs * math.ceil(n_examples / settings.batch_size)


def step_batch(n_examples: int, batch_size: int, seed: int, scope: Scope, step: int) -> np.ndarray:
    """The shots of step `step`: epoch by epoch, a permutation seeded with (seed, scope, epoch)."""
    epoch, position = divmod(step, math.ceil(n_examples / batch_size))
    order = seeded_rng(*entropy(seed, scope, epoch)).permutation(n_examples)
    return order[position * batch_size:(position + 1) * batch_size]


def train_datadream(sd_path: str, examples: Sequence[Example], out_dir: str | Path, settings: DreamSettings,
                    seed: int, scope: Scope = 0, device: str | None = None, sd_revision: str | None = None,
                    provenance: Mapping[str, str] | None = None) -> dict:
    """Fine-tune LoRA adapters on `examples`; write the adapter, losses.csv and train.json to `out_dir`.

    `scope` separates the randomness of adapters trained with the same seed (see `Scope`). Reruns resume from
    `out_dir/checkpoint.pt`. `provenance` (settings digest, model identity, data identity) is recorded in
    train.json; without it the model is known by its path.
    """
    if not examples:
        raise ValueError(f"no training images for the adapter in {out_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    provenance = provenance_or_location(provenance, sd_path)
    fingerprint = checkpoint_identity(provenance, examples, settings, seed, scope)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # The model, and each shot encoded once by the VAE.
    half = compute_dtype(settings.mixed_precision, device)
    if settings.mixed_precision != "no" and half is None:
        LOG.info("mixed_precision=%s ignored on %s: training in fp32", settings.mixed_precision, device)
    parts = load_sd_parts(sd_path, device=device, dtype=half or torch.float32, revision=sd_revision)
    resolution = settings.resolution or parts.resolution
    if resolution % parts.vae_scale:
        raise ValueError(f"dream.resolution {resolution} is not a multiple of the VAE factor {parts.vae_scale}")
    latents = encode_images(parts, [example.path for example in examples], resolution, device)
    latent_size = resolution // parts.vae_scale

    # Fresh adapters initialised from (seed, scope), the optimizer and the learning-rate schedule.
    torch.manual_seed(seed_from(*entropy(seed, scope)))
    params = add_lora(parts, settings)
    if settings.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        parts.text_encoder.gradient_checkpointing_enable()
    parts.unet.train()
    parts.text_encoder.train(settings.train_text_encoder)
    prompts = sorted({example.prompt for example in examples})
    prompt_of = np.array([prompts.index(example.prompt) for example in examples])
    fixed_embeds = None  # the prompts' embeddings, when the text encoder is frozen
    if not settings.train_text_encoder:
        with torch.no_grad():
            fixed_embeds = encode_prompts(parts.tokenizer, parts.text_encoder, prompts, device)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, betas=(settings.adam_beta1, settings.adam_beta2),
                                  weight_decay=settings.weight_decay, eps=settings.adam_epsilon)
    steps = total_steps(len(examples), settings)
    lr_schedule = learning_rate_schedule(optimizer, settings, steps)
    scaler = torch.amp.GradScaler("cuda") if half == torch.float16 else None

    checkpoint = out_dir / CHECKPOINT_FILE
    step, losses = 0, []
    saved = load_checkpoint(checkpoint, fingerprint, optimizer, scaler, "step", "losses", params=params,
                            schedule=lr_schedule)
    if saved is not None:
        step, losses = saved["step"], saved["losses"]
        LOG.info("resuming %s from step %d of %d", out_dir, step, steps)

    bar = progress(steps, f"LoRA {out_dir.name}", initial=step, unit="step")
    while step < steps:
        # All randomness of a step (crops, noise, timesteps) comes from (seed, scope, step).
        batch = step_batch(len(examples), settings.batch_size, seed, scope, step)
        generator = step_generator(seed, scope, step)
        batch_latents = torch.stack([sample_crop(latents[i], latent_size, generator, settings.crop) for i in batch])
        with torch.autocast(device.type, dtype=half, enabled=half is not None):
            if fixed_embeds is None:  # the text encoder runs on the batch's distinct prompts only
                unique, inverse = np.unique(prompt_of[batch], return_inverse=True)
                embeds = encode_prompts(parts.tokenizer, parts.text_encoder, [prompts[i] for i in unique], device)
                embeds = embeds[torch.as_tensor(inverse, device=device)]
            else:
                embeds = fixed_embeds[torch.as_tensor(prompt_of[batch], device=device)]
            loss = denoising_loss(parts, batch_latents.to(device, parts.unet.dtype), embeds, generator)
        optimizer.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
        losses.append((step, loss.detach().item(), lr_schedule.get_last_lr()[0]))
        lr_schedule.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1][1]:.4f}", refresh=False)
        if step % settings.checkpoint_every == 0 and step < steps:
            save_checkpoint(checkpoint, fingerprint, optimizer, scaler, params, lr_schedule, step=step, losses=losses)
    bar.close()

    save_lora(parts, settings, out_dir)
    write_csv(out_dir / LOSSES_FILE, ("step", "loss", "lr"), losses)
    summary = {"made_from": provenance, "identity": fingerprint, "images": len(examples), "prompts": prompts,
               "steps": steps, "resolution": resolution, "device": str(device),
               "wall_seconds": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(device),
               "trainable_parameters": sum(p.numel() for p in params), "final_loss": losses[-1][1]}
    write_json(out_dir / "train.json", summary)
    checkpoint.unlink(missing_ok=True)
    return summary


@dataclass(frozen=True)
class AdapterJob:
    """One adapter of a chunk: its folder, its images and its randomness scope."""

    out_dir: Path
    examples: Sequence[Example]
    scope: Scope


def adapter_jobs(out_dirs: Sequence[str | Path], shots: Sequence[Shot], prompts: Sequence[str],
                 chunk: Sequence[int] | None, per_image: bool = False) -> list[AdapterJob]:
    """The adapters of one training job, in the order of `out_dirs`: the dataset-wide one (`chunk` None), one
    per class of `chunk`, or (`per_image`) one per shot of those classes, class by class in rank order."""
    if chunk is None:
        groups = [(0, list(shots))]
    else:
        of_class = {index: [shot for shot in shots if shot.class_index == index] for index in chunk}
        if per_image:
            groups = [((index + 1, shot.rank + 1), [shot]) for index in chunk
                      for shot in sorted(of_class[index], key=lambda shot: shot.rank)]
        else:
            groups = [(index + 1, of_class[index]) for index in chunk]
    if len(groups) != len(out_dirs):
        raise ValueError(f"{len(out_dirs)} adapter folders (first {out_dirs[0]}) but the few-shot list gives"
                         f" {len(groups)} adapters for classes {list(chunk or [])}:"
                         " a class has other shots than expected")
    return [AdapterJob(Path(out_dir), [Example(shot.path, prompts[shot.class_index]) for shot in group], scope)
            for out_dir, (scope, group) in zip(out_dirs, groups)]


def train_lora_job(classes_csv: str | Path, fewshot_csv: str | Path, adapters: Sequence[str],
                   classes: Sequence[int] | None, settings: Mapping, provenance: Mapping[str, str], sd_location: Mapping,
                   seed: int, shots: int | None = None, shots_per_class: int | None = None) -> None:
    """Train one job's adapters, each into the folder of its files in `adapters`: the dataset-wide one (`classes`
    None) or one per class of `classes` from the K-shot set, or one per listed shot of those classes
    (`shots_per_class`, LoFT's per-image adapters)."""
    prompts = prompts_of(read_classes(classes_csv))
    few_shots = read_fewshot(fewshot_csv, shots_per_class or shots)
    jobs = adapter_jobs(adapter_folders(adapters), few_shots, prompts, classes, per_image=shots_per_class is not None)
    train = train_adapters
    if shots_per_class:
        from datadream_core.image_adapters import train_image_adapters as train  # it imports this module
    summaries = train(sd_location["path"], jobs, settings_dataclass(DreamSettings, settings), seed=seed,
                      sd_revision=sd_location["revision"], provenance=provenance)
    for job, summary in zip(jobs, summaries):
        LOG.info("%s: %d images, %d steps in %.1f s, final loss %.4f", job.out_dir, summary["images"], summary["steps"],
                 summary["wall_seconds"], summary["final_loss"])


def keep_finished(out_dir: Path) -> None:
    finished = out_dir / FINISHED_DIR
    shutil.rmtree(finished, ignore_errors=True)
    finished.mkdir()
    for name in FINISHED_FILES:
        os.link(out_dir / name, finished / name)


def restore_finished(out_dir: Path, identity: str) -> dict | None:
    """The summary of this adapter if a killed run of its chunk finished it (its files are linked back)."""
    finished = out_dir / FINISHED_DIR
    if not all((finished / name).is_file() for name in FINISHED_FILES):
        return None
    summary = read_json(finished / "train.json")
    if summary.get("identity") != identity:
        return None
    for name in FINISHED_FILES:
        (out_dir / name).unlink(missing_ok=True)
        os.link(finished / name, out_dir / name)
    return summary


def train_adapters(sd_path: str, jobs: Sequence[AdapterJob], settings: DreamSettings, seed: int,
                   sd_revision: str | None = None, provenance: Mapping[str, str] | None = None) -> list[dict]:
    """Train a chunk's adapters one after another (`train_datadream` each); return their summaries.

    Snakemake removes a killed job's declared outputs before rerunning it, so each finished adapter's files
    are also hard-linked into a hidden folder beside them until the whole chunk is done: a rerun links them
    back instead of training them again, and resumes the adapter it was killed in from its checkpoint.
    """
    summaries = []
    for job in jobs:
        out_dir = Path(job.out_dir)
        identity = checkpoint_identity(provenance_or_location(provenance, sd_path), job.examples, settings, seed,
                                       job.scope)
        summary = restore_finished(out_dir, identity)
        if summary is None:
            summary = train_datadream(sd_path, job.examples, out_dir, settings, seed=seed, scope=job.scope,
                                      sd_revision=sd_revision, provenance=provenance)
            keep_finished(out_dir)
        else:
            LOG.info("%s: finished by an earlier run of this chunk, kept", out_dir)
        summaries.append(summary)
    for job in jobs:
        shutil.rmtree(Path(job.out_dir) / FINISHED_DIR, ignore_errors=True)
    return summaries
