"""Generation: one cls-mode job end to end (our sampler against the released per-class reload), then its two
parts apart: the per-class adapter switch and the sampling with the adapter in place."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from benchmarks import models, reference
from benchmarks.harness import compare
from benchmarks.stages.common import Context, ceiling_row, fresh, table_row


def gen_settings(ctx: Context, batch: int | None = None, steps: int | None = None):
    from datadream_core.synth.text2img import SamplingSettings

    return SamplingSettings(steps=steps or ctx.work.gen_steps, guidance_scale=2.0, scheduler=None,
                            batch_size=batch or ctx.work.gen_batch, mixed_precision="fp16")


def ours_generate(sd: str, adapters, prompts, n_images: int, settings, device, out_dir: Path, seed: int = 0) -> list[Path]:
    """A DataDream cls generation job (an `sd` job when no class has an adapter) through the product's own
    text2img_shards: one pipeline, each class's adapter fused in turn."""
    from datadream_core.data.table import CLASSES_HEADER
    from datadream_core.io import write_csv
    from datadream_core.synth.generate import GenerationJob, text2img_shards
    from datadream_core.synth.sampler import image_name
    from datadream_core.synth.text2img import AdapterSwitcher, load_text2img

    out_dir.mkdir(parents=True, exist_ok=True)
    classes_csv = out_dir / "classes.csv"
    write_csv(classes_csv, CLASSES_HEADER, [(i, f"class{i}", f"class{i}", prompt) for i, prompt in enumerate(prompts)])
    shard_dirs = {class_index: str(out_dir / f"c{class_index:04d}") for class_index in range(len(prompts))}
    generator = "sd" if all(adapter is None for adapter in adapters) else "datadream_cls"
    job = GenerationJob(generator, seed, 0, 0, n_images, shard_dirs, str(classes_csv), {}, "benchmark", sd, None,
                        "benchmark", "benchmark", adapters={c: [a] for c, a in enumerate(adapters) if a is not None})
    text2img_shards(job, AdapterSwitcher(load_text2img(sd, settings, device)), settings)
    return [Path(folder) / image_name(i) for folder in shard_dirs.values() for i in range(n_images)]


def _image_diff(a_paths, b_paths) -> tuple[float, float]:
    from PIL import Image

    diffs = [np.abs(np.asarray(Image.open(a), dtype=np.int16) - np.asarray(Image.open(b), dtype=np.int16))
             for a, b in zip(a_paths, b_paths)]
    return float(max(d.max() for d in diffs)), float(np.mean([d.mean() for d in diffs]))


def _with_resolution(sd: str, resolution: int | None, root: Path) -> str:
    """The model folder, or a copy whose UNet sample_size gives `resolution` (real size on CPU only)."""
    if resolution is None:
        return sd
    import json

    target = root / f"{Path(sd).name}_{resolution}"
    if not (target / "model_index.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for item in Path(sd).iterdir():
            (target / item.name).symlink_to(item.resolve()) if item.name != "unet" else None
        (target / "unet").mkdir()
        for item in (Path(sd) / "unet").iterdir():
            if item.name != "config.json":
                (target / "unet" / item.name).symlink_to(item.resolve())
        config = json.loads((Path(sd) / "unet" / "config.json").read_text())
        vae = json.loads((Path(sd) / "vae" / "config.json").read_text())
        config["sample_size"] = resolution // 2 ** (len(vae["block_out_channels"]) - 1)
        (target / "unet" / "config.json").write_text(json.dumps(config))
    return str(target)


def _targeted_base_mb(adapters, dtype: torch.dtype) -> float:
    """MiB of the base weights that the adapters change (every module any of them targets), at `dtype`."""
    from datadream_core.synth.text2img import load_lora_factors

    sizes = {key: up.shape[0] * down.shape[1] for adapter in adapters
             for key, (down, up) in load_lora_factors(adapter, torch.device("cpu")).items()}
    return sum(sizes.values()) * torch.finfo(dtype).bits / 8 / 2**20


def stage_generation(ctx: Context) -> list[dict]:
    """A cls-mode job end to end, then (work.gen_parts) its two parts: the per-class adapter switch and the sampling."""
    work = ctx.work
    sd = _with_resolution(models.build_sd(ctx.root / f"sd_{ctx.tag}", work.real_size), work.gen_resolution, ctx.root)
    adapters = models.build_adapters(sd, ctx.root / f"adapters_{ctx.tag}", work.gen_classes, rank=16,
                                     b_std=0.002 if work.real_size else 0.02)
    prompts = models.class_prompts(work.gen_classes)
    settings = gen_settings(ctx)
    dtype = torch.float16 if ctx.device.type == "cuda" else torch.float32
    n_total = work.gen_classes * work.gen_images
    ours_dirs, ref_dirs = fresh(ctx.dir("gen_ours")), fresh(ctx.dir("gen_reference"))
    tolerance = {"max_abs_uint8": 8 if ctx.device.type == "cuda" else 2, "mean_abs_uint8": 0.5}

    def check(result):
        max_diff, mean_diff = _image_diff(result.ours_out, result.reference_out)
        equal = max_diff <= tolerance["max_abs_uint8"] and mean_diff <= tolerance["mean_abs_uint8"]
        return equal, f"{'yes' if equal else 'NO'} (px max|d| {max_diff:.0f}/255, mean {mean_diff:.3f})"

    def ours():
        return ours_generate(sd, adapters, prompts, work.gen_images, settings, ctx.device, ours_dirs(), ctx.seed)

    def ref():
        return reference.reference_generate(sd, adapters, prompts, work.gen_images, ctx.seed, work.gen_steps, 2.0,
                                            work.gen_batch, dtype, ctx.device, ref_dirs())

    result = compare(ours, ref, work.gen_reps, ctx.device, per=n_total, warmup=work.gen_warmup and work.gen_reps > 1,
                     floor=_unet_floor(sd, settings, ctx, work.gen_classes, work.gen_images))
    equal, text = check(result)
    # Ours may hold one copy of the weights the adapters change (the merged ones) beyond what the reference holds.
    targeted_mb = _targeted_base_mb(adapters, dtype)
    bound_mb = result.reference_mb + targeted_mb
    rows = [table_row(f"generation, cls job ({ctx.tag})", result, "s/image", equal, text, {
        "classes": work.gen_classes, "images_per_class": work.gen_images, "steps": work.gen_steps, "cfg": 2.0,
        "batch": work.gen_batch, "dtype": str(dtype), "resolution": work.gen_resolution or "model",
        "timed": "whole job (pipeline load(s), adapters, sampling, PNG writes) / images",
        "noise": "both paths use our per-image generators (the released code reseeds the global RNG per class)"},
        tolerance=tolerance, memory_bound={"targeted_base_weights_mb": targeted_mb, "bound_mb": bound_mb,
                                           "within": result.ours_mb <= bound_mb})]
    rows.append(ceiling_row(f"generation, cls job ({ctx.tag})", result, "s/image",
                             "the base UNet's calls alone (CFG batch, every step, every class), no scheduler, "
                             "text encoder, VAE or PNG"))

    if work.gen_parts:
        rows += generation_parts(ctx, sd, adapters, prompts, settings, dtype, tolerance)
    return rows


def generation_parts(ctx: Context, sd: str, adapters, prompts, settings, dtype: torch.dtype, tolerance: dict) -> list[dict]:
    """The cls job's two parts apart: the per-class adapter switch and the sampling with the adapter in place."""
    from diffusers import StableDiffusionPipeline

    from datadream_core.dream import LORA_FILE
    from datadream_core.synth.text2img import AdapterSwitcher, load_text2img, text2img_renderer

    work = ctx.work
    rows = []
    # Part 1: switching to the next class's adapter.
    switcher = AdapterSwitcher(load_text2img(sd, settings, ctx.device))
    turns = {"ours": iter(range(10**9)), "reference": iter(range(10**9))}  # every call moves to the next class

    def switch_ours():
        turn = next(turns["ours"]) % len(adapters)
        switcher.use(adapters[turn], prompts[turn % len(prompts)])

    def switch_ref():
        pipe = StableDiffusionPipeline.from_pretrained(sd, dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False).to(ctx.device)
        pipe.load_lora_weights(adapters[next(turns["reference"]) % len(adapters)], weight_name=LORA_FILE)

    reps = max(work.reps, work.gen_classes)
    result = compare(switch_ours, switch_ref, reps, ctx.device)
    rows.append(table_row(f"generation: adapter switch per class ({ctx.tag})", result, "s/class", True,
                     "n/a (checked by the image rows)", {"ours": "AdapterSwitcher.use (read the adapter, merge it over the base, encode the prompt)",
                                                         "reference": "from_pretrained + .to(device) + load_lora_weights"}))

    # Part 2: sampling with the adapter fused (ours) or as active LoRA layers (reference).
    embeddings = switcher.use(adapters[0], prompts[0])
    unfused = StableDiffusionPipeline.from_pretrained(sd, dtype=dtype, safety_checker=None,
                                                      requires_safety_checker=False).to(ctx.device)
    unfused.set_progress_bar_config(disable=True)
    unfused.load_lora_weights(adapters[0], weight_name=LORA_FILE)
    render = text2img_renderer(switcher.pipe, settings, embeddings)
    n_images = min(work.gen_batch, 4) if not work.real_size else 1
    from datadream_core.synth.sampler import image_generator

    def sample_ours():
        return render([prompts[0]] * n_images, [image_generator(ctx.seed, 0, i) for i in range(n_images)],
                      list(range(n_images)))

    def sample_ref():
        with torch.no_grad():
            return unfused([prompts[0]] * n_images, num_inference_steps=work.gen_steps, guidance_scale=2.0,
                           generator=[image_generator(ctx.seed, 0, i) for i in range(n_images)],
                           cross_attention_kwargs={"scale": 1.0}).images

    result = compare(sample_ours, sample_ref, work.gen_reps, ctx.device, per=n_images, warmup=work.gen_reps > 1)
    images = [np.asarray(im, dtype=np.int16) for im in result.ours_out], [np.asarray(im, dtype=np.int16) for im in result.reference_out]
    max_diff = max(int(np.abs(a - b).max()) for a, b in zip(*images))
    mean_diff = float(np.mean([np.abs(a - b).mean() for a, b in zip(*images)]))
    equal = max_diff <= tolerance["max_abs_uint8"] and mean_diff <= tolerance["mean_abs_uint8"]
    rows.append(table_row(f"generation: sampling fused vs unfused LoRA ({ctx.tag})", result, "s/image", equal,
                     f"{'yes' if equal else 'NO'} (px max|d| {max_diff}/255, mean {mean_diff:.3f})",
                     {"images": n_images, "batch": n_images, "steps": work.gen_steps}, tolerance=tolerance))
    return rows


def _unet_floor(sd: str, settings, ctx: Context, classes: int, images: int):
    """The denoising UNet calls of a text-to-image job and nothing else: per class, `steps` calls on the
    classifier-free-guidance batch (twice the images of each sampler batch)."""
    from datadream_core.synth.text2img import load_text2img

    pipe = load_text2img(sd, settings, ctx.device)
    unet, length = pipe.unet, pipe.tokenizer.model_max_length
    size, context = unet.config.sample_size, unet.config.cross_attention_dim

    def floor():
        generator = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for _ in range(classes):
                for start in range(0, images, settings.batch_size):
                    batch = 2 * min(settings.batch_size, images - start)
                    latents = torch.randn((batch, unet.config.in_channels, size, size), generator=generator)
                    embeds = torch.randn((batch, length, context), generator=generator)
                    latents, embeds = latents.to(ctx.device, unet.dtype), embeds.to(ctx.device, unet.dtype)
                    for step in range(settings.steps):
                        unet(latents, torch.full((batch,), 999 - step * (1000 // settings.steps), device=ctx.device),
                             embeds)

    return floor
