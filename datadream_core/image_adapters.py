"""LoFT's per-image adapters, a class's K trained together: each step runs a batch holding one image per adapter,
and each sample passes through its own adapter's low-rank factors (a batched LoRA).

Adapter k's loss is the denoising MSE of its own sample; its factors see no other sample, so the summed loss gives
them exactly the gradient of that loss alone. Gradients are clipped by each adapter's own norm, and AdamW updates
every element on its own, so each adapter gets the updates it would get trained alone (tests/test_loft.py
compares them). Its initial factors come from (seed, scope) and each step's crop, noise and timestep from
(seed, scope, step): an adapter does not depend on which adapters shared its steps.

The model is loaded and the shots encoded once per job. A killed job keeps the adapters of its finished classes
(hard-linked beside them, as dream.train_adapters does) and resumes the class it was killed in from its checkpoint.
"""

from __future__ import annotations

import itertools
import shutil
import time
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch

from datadream_core.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from datadream_core.dream import (FINISHED_DIR, LOSSES_FILE, TEXT_LORA_TARGETS, UNET_LORA_TARGETS, AdapterJob,
                                  DreamSettings, checkpoint_identity, encode_images, entropy, keep_finished,
                                  learning_rate_schedule, peak_memory_mb, prediction_and_target, restore_finished,
                                  sample_crop, step_generator, total_steps, write_lora_file)
from datadream_core.identity import digest, provenance_or_location
from datadream_core.io import LOG, write_csv, write_json
from datadream_core.jobs import progress
from datadream_core.models.sd import HALF_DTYPES, SDParts, load_sd_parts
from datadream_core.seeding import seeded_generator


class BatchedLoRALinear(torch.nn.Module):
    """A frozen Linear plus one low-rank delta per adapter: sample g of a batch goes through adapter g's factors.

    down (G, r, in) starts gaussian with std 1 / r and up (G, out, r) at zero, as peft's "gaussian" init; the
    delta is scale * up @ down.
    """

    def __init__(self, base: torch.nn.Linear, rank: int, scale: float, init_generators: Sequence[torch.Generator]):
        super().__init__()
        self.base = base
        self.scale = scale
        self.down = torch.nn.Parameter(torch.stack(
            [torch.randn(rank, base.in_features, generator=generator) / rank for generator in init_generators]))
        self.up = torch.nn.Parameter(torch.zeros(len(init_generators), base.out_features, rank))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        adapters = self.down.shape[0]
        if inputs.shape[0] != adapters:
            raise ValueError(f"a batch of {inputs.shape[0]} samples through {adapters} per-sample adapters:"
                             " each batch holds exactly one sample per adapter")
        flat = inputs.reshape(adapters, -1, inputs.shape[-1])
        delta = flat @ self.down.to(flat.dtype).transpose(1, 2) @ self.up.to(flat.dtype).transpose(1, 2)
        return self.base(inputs) + self.scale * delta.reshape(*inputs.shape[:-1], -1)


def _targets(model: torch.nn.Module, targets: Sequence[str]) -> list[str]:
    """The Linear modules peft would adapt for `targets` (a name equal to a target or ending in "." + target)."""
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
            and any(name == target or name.endswith("." + target) for target in targets)]


@contextmanager
def batched_lora(model: torch.nn.Module, targets: Sequence[str], rank: int, scale: float,
                 init_generators: Sequence[torch.Generator]) -> Iterator[dict[str, BatchedLoRALinear]]:
    """Wrap `model`'s target Linears in BatchedLoRALinear (one adapter per generator) while inside; the plain
    Linears are put back on exit."""
    wrapped: dict[str, BatchedLoRALinear] = {}
    for name in _targets(model, targets):
        parent, _, child = name.rpartition(".")
        base = model.get_submodule(name)
        wrapped[name] = BatchedLoRALinear(base, rank, scale, init_generators).to(base.weight.device)
        setattr(model.get_submodule(parent) if parent else model, child, wrapped[name])
    try:
        yield wrapped
    finally:
        for name, module in wrapped.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.base)


def clip_per_adapter(params: Sequence[torch.nn.Parameter], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ applied to each adapter's slice (dimension 0) of `params` on its own."""
    squares = sum(param.grad.float().pow(2).flatten(1).sum(1) for param in params)
    factors = (max_norm / (squares.sqrt() + 1e-6)).clamp(max=1.0)
    for param in params:
        param.grad.mul_(factors.view(-1, *[1] * (param.grad.dim() - 1)).to(param.grad.dtype))


def _classes(jobs: Sequence[AdapterJob]) -> list[list[AdapterJob]]:
    """The jobs grouped by class (the first word of their scope), in their order."""
    return [list(group) for _, group in itertools.groupby(jobs, key=lambda job: job.scope[0])]


def train_image_adapters(sd_path: str, jobs: Sequence[AdapterJob], settings: DreamSettings, seed: int,
                         sd_revision: str | None = None, provenance: Mapping[str, str] | None = None,
                         device: str | None = None, together: bool = True) -> list[dict]:
    """Train the per-image adapters of `jobs` (one image each), a class's adapters together (`together=False`:
    one at a time, for the comparison); write each adapter's file, losses.csv and train.json; return their
    summaries in the order of `jobs`."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    half = HALF_DTYPES.get(settings.mixed_precision) if device.type == "cuda" else None
    provenance = provenance_or_location(provenance, sd_path)
    identities = [checkpoint_identity(provenance, job.examples, settings, seed, job.scope) for job in jobs]
    summaries = {job.out_dir: restore_finished(job.out_dir, identity) for job, identity in zip(jobs, identities)}
    for job in jobs:
        if summaries[job.out_dir] is not None:
            LOG.info("%s: finished by an earlier run of this chunk, kept", job.out_dir)
    to_train = [job for job in jobs if summaries[job.out_dir] is None]
    if to_train:
        parts = load_sd_parts(sd_path, device=device, dtype=half or torch.float32, revision=sd_revision)
        parts.unet.train()
        groups = _classes(to_train) if together else [[job] for job in to_train]
        bar = progress(len(groups) * total_steps(1, settings), "LoFT adapters", unit="step")
        for group in groups:
            trained = _train_group(parts, group, settings, seed, provenance, device, half, bar)
            for job, summary in zip(group, trained):
                keep_finished(job.out_dir)
                summaries[job.out_dir] = summary
        bar.close()
    for job in jobs:
        shutil.rmtree(job.out_dir / FINISHED_DIR, ignore_errors=True)
    return [summaries[job.out_dir] for job in jobs]


def _train_group(parts: SDParts, group: Sequence[AdapterJob], settings: DreamSettings, seed: int,
                 provenance: Mapping[str, str], device: torch.device, half: torch.dtype | None, bar) -> list[dict]:
    started = time.perf_counter()
    for job in group:
        if len(job.examples) != 1:
            raise ValueError(f"{job.out_dir}: a per-image adapter trains on one image, not {len(job.examples)}")
        job.out_dir.mkdir(parents=True, exist_ok=True)
    examples = [job.examples[0] for job in group]
    steps = total_steps(1, settings)  # one image per adapter: an epoch is one step
    resolution = settings.resolution or parts.resolution
    latents = encode_images(parts, [example.path for example in examples], resolution, device)
    latent_size = resolution // parts.vae_scale
    tokens = parts.tokenizer([example.prompt for example in examples], padding="max_length",
                             max_length=parts.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(device)
    init = [seeded_generator(*entropy(seed, job.scope)) for job in group]
    scale = settings.alpha / settings.rank
    job_identities = [checkpoint_identity(provenance, job.examples, settings, seed, job.scope) for job in group]
    identity = digest(job_identities)
    with batched_lora(parts.unet, UNET_LORA_TARGETS, settings.rank, scale, init) as unet_lora, \
            batched_lora(parts.text_encoder, TEXT_LORA_TARGETS if settings.train_text_encoder else (),
                         settings.rank, scale, init) as text_lora:
        parts.text_encoder.train(settings.train_text_encoder)
        params = [param for module in (*unet_lora.values(), *text_lora.values()) for param in (module.down, module.up)]
        fixed_embeds = None
        if not settings.train_text_encoder:
            with torch.no_grad():
                fixed_embeds = parts.text_encoder(tokens)[0]
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                      betas=(settings.adam_beta1, settings.adam_beta2), eps=settings.adam_epsilon)
        schedule = learning_rate_schedule(optimizer, settings, steps)
        scaler = torch.amp.GradScaler("cuda") if half == torch.float16 else None
        checkpoint = group[0].out_dir / CHECKPOINT_FILE
        step, losses = 0, [[] for _ in group]
        saved = load_checkpoint(checkpoint, identity, optimizer, scaler, "step", "losses", params=params,
                                schedule=schedule)
        if saved is not None:
            step, losses = saved["step"], saved["losses"]
            LOG.info("resuming %s from step %d of %d", group[0].out_dir, step, steps)
        bar.update(step)
        timesteps_in = parts.noise_scheduler.config.num_train_timesteps
        while step < steps:
            generators = [step_generator(seed, job.scope, step) for job in group]
            # per adapter, in the order one trained alone draws them: its crop, its noise, its timestep
            crops = [sample_crop(latent, latent_size, generator, settings.crop)
                     for latent, generator in zip(latents, generators)]
            noise = [torch.randn((1, *crop.shape), generator=generator) for crop, generator in zip(crops, generators)]
            timesteps = [torch.randint(0, timesteps_in, (1,), generator=generator) for generator in generators]
            learning_rate = schedule.get_last_lr()[0]
            with torch.autocast(device.type, dtype=half, enabled=half is not None):
                embeds = fixed_embeds if fixed_embeds is not None else parts.text_encoder(tokens)[0]
                prediction, target = prediction_and_target(
                    parts, torch.stack(crops).to(device, parts.unet.dtype), torch.cat(noise).to(device),
                    torch.cat(timesteps).to(device), embeds)
            per_adapter = (prediction - target).pow(2).flatten(1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(per_adapter.sum()).backward()
                scaler.unscale_(optimizer)
            else:
                per_adapter.sum().backward()
            clip_per_adapter(params, settings.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            for adapter_losses, loss in zip(losses, per_adapter.detach().tolist()):
                adapter_losses.append((step, loss, learning_rate))
            schedule.step()
            step += 1
            bar.update(1)
            if step % settings.checkpoint_every == 0 and step < steps:
                save_checkpoint(checkpoint, identity, optimizer, scaler, params, schedule, step=step, losses=losses)
        summaries = []
        for index, job in enumerate(group):
            write_lora_file(job.out_dir, _adapter_layers(unet_lora, index), scale,
                            _adapter_layers(text_lora, index) if settings.train_text_encoder else None)
            write_csv(job.out_dir / LOSSES_FILE, ("step", "loss", "lr"), losses[index])
            summary = {"made_from": dict(provenance), "identity": job_identities[index], "images": 1, "prompts": [job.examples[0].prompt], "steps": step, "resolution": resolution,
                       "device": str(device), "trained_together": len(group),
                       "wall_seconds": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(device),
                       "trainable_parameters": sum(module.down[index].numel() + module.up[index].numel()
                                                   for module in (*unet_lora.values(), *text_lora.values())),
                       "final_loss": losses[index][-1][1]}
            write_json(job.out_dir / "train.json", summary)
            summaries.append(summary)
    checkpoint.unlink(missing_ok=True)
    return summaries


def _adapter_layers(wrapped: Mapping[str, BatchedLoRALinear], index: int) -> dict[str, torch.Tensor]:
    """Adapter `index`'s factors keyed as peft names them, for dream.write_lora_file."""
    layers = {}
    for name, module in wrapped.items():
        layers[f"{name}.lora_A.weight"] = module.down[index]
        layers[f"{name}.lora_B.weight"] = module.up[index]
    return layers
