"""One function per stage: build the work, run our path and the reference path interleaved, check outputs.

Each returns table rows (dicts). Times are per unit of work (the row's `unit`), medians over repetitions.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmarks import models, reference
from benchmarks.harness import Comparison, Measured, compare, time_once
from datadream_core.dream import LoraTraining, lora_step  # the LoRA rows time the product's own step

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Work:
    """Sizes of the work of every stage; `quick` (tiny), `full` (tiny, more repetitions) or `real` (real size)."""

    name: str
    real_size: bool = False
    reps: int = 5
    # LoRA training: one cls adapter (all images of one class, one prompt)
    lora_images: int = 16
    lora_image_size: tuple[int, int] = (500, 375)
    lora_epochs: int = 2
    lora_batch: int = 8
    lora_resolution: int | None = None
    # generation: one cls-mode job
    gen_classes: int = 8
    gen_images: int = 2
    gen_steps: int = 50
    gen_batch: int = 10
    gen_resolution: int | None = None
    gen_reps: int = 3
    gen_warmup: bool = False  # the job's first run of each path is timed too (it also samples peak memory)
    ablation_steps: int = 10  # sampler steps in the generation ablations (both sides alike)
    gen_parts: bool = True  # the job's two parts as rows of their own: adapter switch, fused vs unfused sampling
    # classifier: class counts of the evaluation and training rows (100 ~ Caltech/Aircraft/Flowers, 1000 = ImageNet)
    eval_classes: tuple[int, ...] = (100, 1000)
    eval_images: int = 160
    eval_image_size: tuple[int, int] = (500, 375)  # test photos of the CoOp datasets' typical size
    eval_epochs: int = 10  # evaluations in one classifier run (one per epoch; paper.yaml trains 60 epochs)
    train_classes: tuple[int, ...] = (100, 1000)
    train_batch: int = 64
    train_steps: int = 3
    worker_ablation: int = 0  # DataLoader workers for the decode-in-workers ablation (0: not run)
    context_ablation: bool = False  # classifier training: truncated vs full context without checkpointing
    # FID: (dimension, repetitions); one repetition means no warm-up run
    fid: list[tuple[int, int]] = field(default_factory=lambda: [(512, 3), (2048, 1)])
    dag_reps: int = 1
    ablations: bool = True
    compile: bool = False


QUICK = Work("quick")
FULL = Work("full", reps=7, gen_reps=5, gen_warmup=True, ablation_steps=50, lora_epochs=3, eval_images=512,
            train_steps=5, worker_ablation=2, context_ablation=True, fid=[(512, 5), (2048, 3)], dag_reps=3, compile=True)
# Real-size architectures with random weights: reduced work so a CPU finishes (each row records its work).
REAL_CPU = Work("real", real_size=True, reps=1, lora_images=4, lora_image_size=(320, 256), lora_epochs=1, lora_batch=2,
                lora_resolution=256, gen_classes=3, gen_images=1, gen_steps=4, gen_batch=1, gen_resolution=256,
                gen_reps=1, eval_classes=(100,), eval_images=16, eval_epochs=2, train_classes=(100,), train_batch=8,
                train_steps=1, fid=[], ablations=False)
# On a GPU: the paper's resolution, batch sizes and sampler steps (not run yet: no GPU in this task).
REAL_GPU = Work("real", real_size=True, reps=3, lora_images=16, lora_image_size=(640, 512), lora_epochs=2,
                lora_resolution=512, gen_classes=8, gen_images=10, gen_steps=50, gen_batch=10, gen_reps=2,
                ablation_steps=50, eval_images=1024, eval_epochs=3, train_batch=64, train_steps=5, worker_ablation=4,
                context_ablation=True, fid=[], compile=True)


@dataclass
class Context:
    root: Path
    device: torch.device
    work: Work
    seed: int = 0

    def dir(self, *names: str) -> Path:
        path = self.root.joinpath(self.work.name, *names)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tag(self) -> str:
        return "real" if self.work.real_size else "tiny"


def _row(stage: str, comparison: Comparison, unit: str, equal: bool, equal_text: str, work: dict, **extra) -> dict:
    return {"stage": stage, "unit": unit, "ours_median_s": comparison.ours_median,
            "reference_median_s": comparison.reference_median, "speedup": comparison.speedup,
            "ours_s": comparison.ours_s, "reference_s": comparison.reference_s,
            "rep_speedups": comparison.rep_speedups,
            "paired_speedup_median": float(np.median(comparison.rep_speedups)),
            "peak_mb": {"ours": comparison.ours_mb, "reference": comparison.reference_mb},
            "outputs_equal": bool(equal), "equal_text": equal_text, "work": work, **extra}


def _ceiling_row(stage: str, comparison: Comparison, unit: str, floor: str) -> dict:
    """The required model compute alone (`floor`, timed in the same rotation as the two paths) against the
    reference: no path doing this work at this precision can beat that ratio on this machine."""
    floor_median = float(np.median(comparison.floor_s))
    return {"stage": f"ceiling: {stage}", "unit": unit, "ours_median_s": floor_median,
            "reference_median_s": comparison.reference_median, "speedup": comparison.reference_median / floor_median,
            "ours_s": comparison.floor_s, "reference_s": comparison.reference_s,
            "rep_speedups": [r / f for f, r in zip(comparison.floor_s, comparison.reference_s)], "peak_mb": {},
            "outputs_equal": None, "equal_text": "n/a (floor: model compute only)", "work": {"floor": floor},
            "ceiling": True}


def _fresh(base: Path):
    """A callable giving a new empty folder under `base` per call (generation skips existing images)."""
    counter = iter(range(10**9))

    def make() -> Path:
        path = base / f"run{next(counter):04d}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    return make


# --- 1. LoRA training ----------------------------------------------------------------------------------------

def _lora_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from datadream_core.dream import LORA_FILE

    return load_file(str(folder / LORA_FILE))


PAPER_CLS_STEPS = 400  # one cls adapter in the paper: 200 epochs x ceil(16 shots / batch 8)


def lora_precision_ablation(ctx: Context, sd: str, paths: Sequence[str], settings, batches, reps: int,
                            half: torch.dtype = torch.bfloat16) -> dict:
    """train_datadream's mixed_precision lever: frozen weights in `half`, LoRA weights in fp32, forward under
    autocast, against fp32, on the same steps from the same LoRA initialisation."""
    from datadream_core.dream import add_lora, encode_images, step_generator
    from datadream_core.models.sd import load_sd_parts

    prompt_of, prompts = np.zeros(len(paths), dtype=int), ["a photo of a dax"]

    def path(dtype: torch.dtype | None):
        parts = load_sd_parts(sd, device=ctx.device, dtype=dtype or torch.float32)
        torch.manual_seed(0)
        params = add_lora(parts, settings)
        parts.unet.train()
        parts.text_encoder.train()
        resolution = settings.resolution or parts.resolution
        latents = encode_images(parts, paths, resolution, ctx.device)
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)

        training = LoraTraining(parts=parts, params=params, latents=latents, latent_size=resolution // parts.vae_scale,
                                prompts=prompts, prompt_of=prompt_of, optimizer=optimizer,
                                max_grad_norm=settings.max_grad_norm, device=ctx.device, half=dtype)

        def run():
            return [lora_step(training, batch, step_generator(ctx.seed, 1, step)) for step, batch in enumerate(batches)]

        return run

    result = compare(path(half), path(None), reps, ctx.device, per=len(batches))
    difference = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(result.ours_out, result.reference_out))
    tolerance = {"loss_rel": 5e-2}
    equal = difference <= tolerance["loss_rel"]
    name = str(half).removeprefix("torch.")
    return _row(f"ablation lora: {name} autocast, fp32 LoRA weights vs fp32 ({ctx.tag})", result, "s/step", equal,
                f"{'yes' if equal else 'NO'} (loss rel {difference:.1e} over the first run's steps)",
                {"steps": len(batches), "dtype": name, "note": "dream.mixed_precision; off in paper.yaml, as in the "
                 "released code (fp32, TF32 off)"}, tolerance=tolerance, ablation=True)


def stage_lora(ctx: Context) -> list[dict]:
    """Per-step time on one loaded model with LoRA (both paths share it, each with its own optimizer); our
    one-time latent cache is timed in every repetition and charged per step over a paper cls adapter (400
    steps). Outputs: a whole adapter run of train_datadream against the reference loop, compared at the end."""
    from datadream_core.dream import (DreamSettings, Example, add_lora, denoising_loss, encode_images, step_generator,
                                      train_datadream)
    from datadream_core.io import read_csv
    from datadream_core.models.sd import load_sd_parts

    work = ctx.work
    sd = models.build_sd(ctx.root / f"sd_{ctx.tag}", work.real_size)
    paths = models.write_images(ctx.dir("lora_shots"), work.lora_images, work.lora_image_size, seed=1, fmt="jpg")
    examples = [Example(path, "a photo of a dax") for path in paths]  # mode cls: one class, one prompt
    # The equality run uses square shots: with no crop, encoding the pixel crop and cropping the cached latent
    # are the same computation. (With crops they differ at the crop edges by the VAE's receptive field: the
    # one approximation of the latent-crop lever, a loss difference of about 1e-3 relative on these models.)
    side = min(work.lora_image_size)
    square = [Example(path, "a photo of a dax") for path in
              models.write_images(ctx.dir("lora_square"), work.lora_images, (side, side), seed=1, fmt="jpg")]
    settings = DreamSettings(rank=16, alpha=16, batch_size=work.lora_batch, epochs=work.lora_epochs, warmup_steps=100,
                             resolution=work.lora_resolution, checkpoint_every=10**9)
    steps = work.lora_epochs * math.ceil(len(examples) / settings.batch_size)

    # Outputs: the real train_datadream against the reference loop, same seed and scope.
    ours_dir, ref_dir = ctx.dir("lora_ours"), ctx.dir("lora_reference")
    train_datadream(sd, square, ours_dir, settings, seed=ctx.seed, scope=1, device=str(ctx.device))
    ours_losses = [float(row["loss"]) for row in read_csv(ours_dir / "losses.csv")]
    ref_losses = reference.reference_train_lora(sd, square, settings, ctx.seed, 1, ctx.device, ref_dir)
    ours_w, ref_w = _lora_tensors(ours_dir), _lora_tensors(ref_dir)
    weight_diff = max(float((ours_w[k] - ref_w[k]).abs().max()) for k in ours_w)
    loss_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_losses, ref_losses))
    tolerance = {"loss_rel": 1e-4, "lora_weight_abs": 1e-5}
    equal = (set(ours_w) == set(ref_w) and len(ours_losses) == len(ref_losses) == steps
             and loss_diff <= tolerance["loss_rel"] and weight_diff <= tolerance["lora_weight_abs"])
    text = f"{'yes' if equal else 'NO'} (loss rel {loss_diff:.1e}, LoRA max|d| {weight_diff:.1e})"

    # Timing: both step functions on one loaded model.
    parts = load_sd_parts(sd, device=ctx.device)
    resolution = settings.resolution or parts.resolution
    latent_size = resolution // parts.vae_scale
    torch.manual_seed(0)
    params = add_lora(parts, settings)
    parts.unet.train()
    parts.text_encoder.train()
    prompts = sorted({e.prompt for e in examples})
    prompt_of = np.array([prompts.index(e.prompt) for e in examples])
    optimizers = {name: torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2) for name in ("ours", "reference")}
    batches = [np.random.default_rng([ctx.seed, step]).permutation(len(examples))[:settings.batch_size]
               for step in range(steps)]
    cache_s = []

    def ours():
        started = time.perf_counter()
        latents = encode_images(parts, paths, resolution, ctx.device)
        cache_s.append(time.perf_counter() - started)
        training = LoraTraining(parts=parts, params=params, latents=latents, latent_size=latent_size, prompts=prompts,
                                prompt_of=prompt_of, optimizer=optimizers["ours"], max_grad_norm=settings.max_grad_norm,
                                device=ctx.device)
        loop_started = time.perf_counter()
        for step, batch in enumerate(batches):
            lora_step(training, batch, step_generator(ctx.seed, 1, step))
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        # the steps, plus the cache charged per step over one paper cls adapter (400 steps)
        return Measured(time.perf_counter() - loop_started + cache_s[-1] * steps / PAPER_CLS_STEPS)

    def ref():
        for step, batch in enumerate(batches):
            reference.reference_lora_step(parts, [paths[i] for i in batch], [examples[i].prompt for i in batch],
                                          resolution, step_generator(ctx.seed, 1, step), ctx.device, params,
                                          optimizers["reference"], settings.max_grad_norm)

    # Ceiling: the model compute every path must do, with the batch latents and noise already in memory.
    latents = encode_images(parts, paths, resolution, ctx.device)
    batch_latents = [torch.stack([latents[i].mean[:, :latent_size, :latent_size] for i in batch]).to(ctx.device)
                     for batch in batches]
    tokens = parts.tokenizer(prompts[:1], padding="max_length", max_length=parts.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(ctx.device)
    optimizers["floor"] = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)

    def floor():
        for step, step_latents in enumerate(batch_latents):
            embeds = parts.text_encoder(tokens)[0].expand(len(step_latents), -1, -1)
            loss = denoising_loss(parts, step_latents, embeds, step_generator(ctx.seed, 1, step))
            optimizers["floor"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizers["floor"].step()

    result = compare(ours, ref, work.reps, ctx.device, per=steps, warmup=work.reps > 1, floor=floor)
    rows = [_row(f"lora train step ({ctx.tag})", result, "s/step", equal, text, {
        "images": len(examples), "image_size": work.lora_image_size, "image_format": "jpg", "batch": settings.batch_size,
        "steps_timed": steps, "resolution": resolution, "rank": settings.rank, "text_encoder_lora": True,
        "latent_cache_s_median": float(np.median(cache_s)), "cache_charged_over_steps": PAPER_CLS_STEPS,
        "equality_run": f"train_datadream vs reference loop, {steps} steps, square {side}px shots"}, tolerance=tolerance),
        _ceiling_row(f"lora train step ({ctx.tag})", result, "s/step", "UNet + text-encoder forward/backward with "
                     "LoRA (one prompt), clipping and AdamW, on latents already in memory")]
    if work.ablations and ctx.device.type == "cuda":  # train_datadream trains in fp32 on a CPU whatever the setting
        rows.append(lora_precision_ablation(ctx, sd, paths, settings, batches, work.reps))
    return rows


# --- 2. generation ----------------------------------------------------------------------------------------------

def _gen_settings(ctx: Context, batch: int | None = None, steps: int | None = None):
    from datadream_core.synth.text2img import SamplingSettings

    return SamplingSettings(steps=steps or ctx.work.gen_steps, guidance_scale=2.0, scheduler=None,
                            batch_size=batch or ctx.work.gen_batch, mixed_precision="fp16")


def ours_generate(sd: str, adapters, prompts, n_images: int, settings, device, out_dir: Path, seed: int = 0,
                  prepare=None) -> list[Path]:
    """A DataDream cls generation job (an `sd` job when no class has an adapter) through the product's own
    text2img_shards: one pipeline (`prepare`d, for the ablations), each class's adapter fused in turn."""
    from datadream_core.data.table import CLASSES_HEADER
    from datadream_core.io import write_csv
    from datadream_core.synth.generate import ShardRequest, text2img_shards
    from datadream_core.synth.sampler import image_name
    from datadream_core.synth.text2img import AdapterSwitcher, load_text2img

    out_dir.mkdir(parents=True, exist_ok=True)
    classes_csv = out_dir / "classes.csv"
    write_csv(classes_csv, CLASSES_HEADER, [(i, f"class{i}", f"class{i}", prompt) for i, prompt in enumerate(prompts)])
    shard_dirs = {class_index: str(out_dir / f"c{class_index:04d}") for class_index in range(len(prompts))}
    generator = "sd" if all(adapter is None for adapter in adapters) else "datadream_cls"
    request = ShardRequest(generator, seed, 0, 0, n_images, shard_dirs, str(classes_csv), {}, "benchmark", sd, None,
                           "benchmark", "benchmark", adapters={c: [a] for c, a in enumerate(adapters) if a is not None})
    switcher = AdapterSwitcher(load_text2img(sd, settings, device))
    if prepare:
        prepare(switcher.pipe)
    text2img_shards(request, switcher, settings)
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
    settings = _gen_settings(ctx)
    dtype = torch.float16 if ctx.device.type == "cuda" else torch.float32
    n_total = work.gen_classes * work.gen_images
    ours_dirs, ref_dirs = _fresh(ctx.dir("gen_ours")), _fresh(ctx.dir("gen_reference"))
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
    rows = [_row(f"generation, cls job ({ctx.tag})", result, "s/image", equal, text, {
        "classes": work.gen_classes, "images_per_class": work.gen_images, "steps": work.gen_steps, "cfg": 2.0,
        "batch": work.gen_batch, "dtype": str(dtype), "resolution": work.gen_resolution or "model",
        "timed": "whole job (pipeline load(s), adapters, sampling, PNG writes) / images",
        "noise": "both paths use our per-image generators (the released code reseeds the global RNG per class)"},
        tolerance=tolerance, memory_bound={"targeted_base_weights_mb": targeted_mb, "bound_mb": bound_mb,
                                           "within": result.ours_mb <= bound_mb})]
    rows.append(_ceiling_row(f"generation, cls job ({ctx.tag})", result, "s/image",
                             "the base UNet's calls alone (CFG batch, every step, every class), no scheduler, "
                             "text encoder, VAE or PNG"))

    if work.gen_parts:
        rows += generation_parts(ctx, sd, adapters, prompts, settings, dtype, tolerance)
    if work.ablations:
        rows += generation_ablations(ctx, sd, adapters[:1], prompts[:1])
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
    rows.append(_row(f"generation: adapter switch per class ({ctx.tag})", result, "s/class", True,
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
    rows.append(_row(f"generation: sampling fused vs unfused LoRA ({ctx.tag})", result, "s/image", equal,
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


def use_channels_last(pipe) -> None:
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)


def compile_unet(pipe, backend: str = "inductor") -> None:
    pipe.unet = torch.compile(pipe.unet, backend=backend)


def generation_ablations(ctx: Context, sd: str, adapters, prompts) -> list[dict]:
    """Levers on our generation path, each against the same path without it (one class, `gen_batch` images)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    work = ctx.work
    n_images = work.gen_batch
    rows = []

    def classic(pipe):
        pipe.unet.set_attn_processor(AttnProcessor())
        pipe.vae.set_attn_processor(AttnProcessor())

    def sdpa(pipe):
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())

    levers = [("batch %d vs 1" % work.gen_batch, {}, {"batch": 1}),
              ("channels_last vs contiguous", {"prepare": use_channels_last}, {}),
              ("SDPA (AttnProcessor2_0) vs classic AttnProcessor", {"prepare": sdpa}, {"prepare": classic})]
    if work.compile:
        levers.append(("torch.compile(unet) vs eager", {"prepare": compile_unet}, {}))
    for label, on, off in levers:
        dirs_on, dirs_off = _fresh(ctx.dir("abl_on")), _fresh(ctx.dir("abl_off"))

        def run(options, dirs):
            settings = _gen_settings(ctx, options.get("batch"), work.ablation_steps)
            return lambda: ours_generate(sd, adapters, prompts, n_images, settings, ctx.device, dirs(), ctx.seed,
                                         prepare=options.get("prepare"))

        try:
            result = compare(run(on, dirs_on), run(off, dirs_off), max(3, work.gen_reps), ctx.device, per=n_images)
        except Exception as error:  # an optional lever (torch.compile) may not work on this machine
            rows.append({"stage": f"ablation gen: {label} ({ctx.tag})", "unit": "s/image", "error": repr(error)[:300],
                         "equal_text": "n/a (failed)"})
            continue
        max_diff, mean_diff = _image_diff(result.ours_out, result.reference_out)
        equal = max_diff <= 2 and mean_diff <= 0.5
        rows.append(_row(f"ablation gen: {label} ({ctx.tag})", result, "s/image", equal,
                         f"{'yes' if equal else 'NO'} (px max|d| {max_diff:.0f})",
                         {"images": n_images, "steps": work.ablation_steps, "note": "ours = lever on, reference = lever off;"
                          " compile time falls in the untimed warm-up run" if "compile" in label else
                          "ours = lever on, reference = lever off"}, ablation=True))
    return rows


# --- 3./4. classifier -------------------------------------------------------------------------------------------

def _classify_settings(**overrides):
    from datadream_core.classify.train import ClassifySettings

    base = ClassifySettings(method="lora", lora_targets=("q", "v"), lora_rank=16, lora_alpha=32, lora_dropout=0.1,
                            logit_scale=100, optimizer="adamw", momentum=0.9, learning_rate=1e-4, min_learning_rate=1e-8,
                            weight_decay=1e-4, batch_size=64, eval_batch_size=256, epochs=1, steps=None,
                            warmup_epochs=0, real_weight=0.8, mix_prob=0.2, augment="released", selection="last",
                            validation="fewshot", mixed_precision="fp16", workers=0, eval_cache_mb=4096, seed=0)
    return replace(base, **overrides)


def _classifier(ctx: Context, settings, n_classes: int):
    from datadream_core.classify.lora import add_lora, truncate_context

    loaded = models.build_clip(ctx.root / "tiny_clip", ctx.work.real_size)
    model = loaded.model
    add_lora(model, settings.lora_targets, settings.lora_rank, settings.lora_alpha, settings.lora_dropout)
    models.randomise_clip_lora(model, std=0.02, seed=3)
    model.to(ctx.device)
    full = loaded.tokenize(models.class_prompts(n_classes))
    return loaded, model, full.to(ctx.device), truncate_context(model, full).to(ctx.device)


def stage_classifier_eval(ctx: Context) -> list[dict]:
    return [row for n in ctx.work.eval_classes for row in classifier_eval(ctx, n)]


def classifier_eval(ctx: Context, n_classes: int) -> list[dict]:
    from datadream_core.classify.data import EvalImages, Example, ImageList, eval_transform, make_loader
    from datadream_core.classify.train import _autocast, class_logits, evaluate, text_features

    work = ctx.work
    settings = _classify_settings(eval_batch_size=256, workers=0)
    loaded, model, full, short = _classifier(ctx, settings, n_classes)
    paths = models.write_images(ctx.dir("eval_images"), work.eval_images, work.eval_image_size, seed=2, fmt="jpg")
    rng = np.random.default_rng(4)
    examples = [Example(path, int(rng.integers(n_classes)), True) for path in paths]
    transform = eval_transform(loaded.image_size, loaded.mean, loaded.std)

    def eval_images(options=settings, cache_mb: float = 0):
        return EvalImages(examples, loaded.image_size, loaded.mean, loaded.std, options.eval_batch_size,
                          options.workers, cache_mb)

    def ours():
        return evaluate(model, short, eval_images(), n_classes, settings, ctx.device, "eval")

    def ref():
        return reference.reference_evaluate(model, full, examples, transform, settings.logit_scale, ctx.device,
                                            settings.mixed_precision, batch_size=8, workers=settings.workers)

    def floor():
        images = ImageList(examples, transform)
        with torch.no_grad(), _autocast(ctx.device, settings.mixed_precision):
            text_features(model, short)
            for start in range(0, len(examples), settings.eval_batch_size):
                stop = min(len(examples), start + settings.eval_batch_size)
                batch = torch.stack([images[i][0] for i in range(start, stop)])
                model.encode_image(batch.to(ctx.device))

    result = compare(ours, ref, work.reps, ctx.device, per=len(examples), warmup=work.reps > 1, floor=floor)
    # Prediction-level check: our text features (once, truncated context) against the reference's predictions.
    with torch.no_grad(), _autocast(ctx.device, settings.mixed_precision):
        model.eval()
        texts = text_features(model, short)
        ours_pred = torch.cat([class_logits(model, images.to(ctx.device), texts, settings.logit_scale).argmax(-1).cpu()
                               for images, _, _ in make_loader(examples, transform, settings.eval_batch_size, 0)])
    ref_pred = result.reference_out
    labels = torch.tensor([e.label for e in examples])
    ref_correct = torch.bincount(labels[ref_pred == labels], minlength=n_classes).tolist()
    differing = int((ours_pred != ref_pred).sum())
    equal = differing == 0 and result.ours_out.correct == ref_correct
    text = f"{'yes' if equal else 'NO'} ({differing} of {len(examples)} predictions differ)"
    rows = [_row(f"classifier eval, {n_classes} classes ({ctx.tag})", result, "s/image", equal, text, {
        "classes": n_classes, "images": len(examples), "image_size": work.eval_image_size,
        "ours_batch": settings.eval_batch_size, "reference_batch": 8, "context_ours": int(short.shape[1]),
        "context_reference": int(full.shape[1]), "workers": settings.workers,
        "timed": "whole evaluation incl. image decoding / images"})]

    rows.append(_ceiling_row(f"classifier eval, {n_classes} classes ({ctx.tag})", result, "s/image",
                             "decoding and transforming every image, one image-tower pass per image, text features once"))

    if n_classes == work.eval_classes[0]:
        rows.append(classifier_eval_per_run(
            ctx, n_classes, lambda: eval_images(cache_mb=settings.eval_cache_mb),
            lambda images: evaluate(model, short, images, n_classes, settings, ctx.device, "eval").correct, ref, labels))

    if work.worker_ablation and n_classes == work.eval_classes[0]:
        # Image decoding in DataLoader workers (our default classify.workers is 4) against the main process.
        with_workers = _classify_settings(eval_batch_size=256, workers=work.worker_ablation)
        result = compare(lambda: evaluate(model, short, eval_images(with_workers), n_classes, with_workers, ctx.device,
                                          "eval"), ours, work.reps, ctx.device, per=len(examples))
        same = result.ours_out.correct == result.reference_out.correct
        rows.append(_row(f"ablation clf eval: {work.worker_ablation} decode workers vs 0, {n_classes} classes ({ctx.tag})",
                         result, "s/image", same, "yes" if same else "NO", {"images": len(examples)}, ablation=True))
    return rows


def classifier_eval_per_run(ctx: Context, n_classes: int, new_eval_set, ours_pass, ref_pass, labels) -> dict:
    """A classifier run evaluates every epoch: the released code its test set, ours the val split, which it
    decodes once and keeps in memory (classify.eval_cache_mb). The same set and passes on both sides here."""
    epochs = ctx.work.eval_epochs

    def ours_run():
        images = new_eval_set()
        return [ours_pass(images) for _ in range(epochs)]

    def ref_run():
        return [ref_pass() for _ in range(epochs)]

    result = compare(ours_run, ref_run, ctx.work.reps, ctx.device, per=epochs * len(labels), warmup=ctx.work.reps > 1)
    ref_counts = [torch.bincount(labels[pred == labels], minlength=n_classes).tolist() for pred in result.reference_out]
    equal = result.ours_out == ref_counts
    return _row(f"classifier eval, every epoch of a run, {n_classes} classes ({ctx.tag})", result, "s/image/epoch",
                equal, f"{'yes' if equal else 'NO'} (per-class correct, all {epochs} epochs)", {
                    "classes": n_classes, "images": len(labels), "epochs": epochs,
                    "ours": "EvalImages decoded once and kept in memory (classify.eval_cache_mb), one pass per epoch",
                    "reference": "the released per-epoch test evaluation (bs 8, text features every batch)",
                    "timed": "all epochs' evaluations incl. decoding / (images x epochs)"})


def stage_classifier_train(ctx: Context) -> list[dict]:
    return [row for n in ctx.work.train_classes for row in classifier_train(ctx, n)]


def classifier_train(ctx: Context, n_classes: int) -> list[dict]:
    import torch.nn.functional as F

    from datadream_core.classify.train import StepBudget, _train_epoch, class_logits, text_features

    work = ctx.work
    settings = _classify_settings(batch_size=work.train_batch)
    loaded, model, full, short = _classifier(ctx, settings, n_classes)
    generator = torch.Generator().manual_seed(5)
    batches = [(torch.randn((work.train_batch, 3, loaded.image_size, loaded.image_size), generator=generator),
                torch.randint(0, n_classes, (work.train_batch,), generator=generator),
                torch.rand(work.train_batch, generator=generator) < 0.5) for _ in range(work.train_steps)]
    params = [p for p in model.parameters() if p.requires_grad]
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.device.type == "cuda")

    def path(tokens, checkpointing):
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)

        def run():
            reference.set_text_checkpointing(model, checkpointing)
            torch.manual_seed(0)
            _train_epoch(model, tokens, batches, optimizer, scaler, settings, 0.8, n_classes,
                         StepBudget(100, len(batches), 0), 0, ctx.device, random.Random(0), "train")
            reference.set_text_checkpointing(model, False)

        return run

    # Equality first, before any step changes the weights: logits and LoRA gradients with dropout off.
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved_p = [m.p for m in dropouts]
    for m in dropouts:
        m.p = 0.0
    images, labels, _ = batches[0]
    outputs = []
    for tokens, checkpointing in ((short, False), (full, True)):
        model.train()
        reference.set_text_checkpointing(model, checkpointing)
        model.zero_grad(set_to_none=True)
        logits = class_logits(model, images.to(ctx.device), text_features(model, tokens), settings.logit_scale)
        F.cross_entropy(logits, labels.to(ctx.device)).backward()
        outputs.append((logits.detach().cpu(), [p.grad.detach().cpu().clone() for p in params]))
    reference.set_text_checkpointing(model, False)
    model.zero_grad(set_to_none=True)
    for m, p in zip(dropouts, saved_p):
        m.p = p
    logit_diff = float((outputs[0][0] - outputs[1][0]).abs().max())
    grad_diff = max(float((a - b).abs().max() / max(float(b.abs().max()), 1e-12)) for a, b in zip(outputs[0][1], outputs[1][1]))
    tolerance = {"logit_abs": 1e-3, "grad_rel": 1e-3}
    equal = logit_diff <= tolerance["logit_abs"] and grad_diff <= tolerance["grad_rel"]

    result = compare(path(short, False), path(full, True), work.reps, ctx.device, per=work.train_steps,
                     warmup=work.reps > 1)
    text = f"{'yes' if equal else 'NO'} (logits max|d| {logit_diff:.1e}, grad rel {grad_diff:.1e})"
    rows = [_row(f"classifier train step, {n_classes} classes ({ctx.tag})", result, "s/step", equal, text, {
        "classes": n_classes, "batch": work.train_batch, "steps": work.train_steps,
        "context_ours": int(short.shape[1]), "context_reference": int(full.shape[1]),
        "reference_text_checkpointing": True, "mix_prob": settings.mix_prob,
        "timed": "_train_epoch over in-memory batches / steps"}, tolerance=tolerance)]
    if work.context_ablation:
        # The context alone (no checkpointing on either side), to separate the two levers.
        result = compare(path(short, False), path(full, False), work.reps, ctx.device, per=work.train_steps)
        rows.append(_row(f"ablation clf train: truncated vs full context, no ckpt, {n_classes} classes ({ctx.tag})", result, "s/step",
                         equal, text, {"classes": n_classes, "batch": work.train_batch}, ablation=True))
    return rows


# --- 5. FID --------------------------------------------------------------------------------------------------

def stage_fid(ctx: Context) -> list[dict]:
    from datadream_core.metrics.fid import frechet_distance

    rows = []
    for dim, reps in ctx.work.fid:
        rng = np.random.default_rng(dim)
        mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
        a = rng.standard_normal((2 * dim, dim)) @ mixing
        b = rng.standard_normal((2 * dim, dim)) @ (mixing + 0.1 * rng.standard_normal((dim, dim)) / np.sqrt(dim)) + 0.05
        stats = [a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)]
        tensors = [torch.from_numpy(s) for s in stats]

        result = compare(lambda: frechet_distance(*tensors, device=ctx.device),
                         lambda: reference.reference_frechet_distance(*stats), reps, ctx.device, warmup=reps > 1)
        rel = abs(result.ours_out - result.reference_out) / abs(result.reference_out)
        equal = rel <= 1e-6
        rows.append(_row(f"FID {dim}-d", result, "s/distance", equal,
                         f"{'yes' if equal else 'NO'} (rel {rel:.1e}; FID {result.reference_out:.2f})",
                         {"dim": dim, "samples_per_set": 2 * dim, "reference": "pytorch-fid (scipy.linalg.sqrtm)",
                          "ours": f"eigendecomposition on {ctx.device.type}"}, tolerance={"rel": 1e-6}))
    return rows


# --- 6. DAG planning ---------------------------------------------------------------------------------------------

def stage_dag(ctx: Context) -> list[dict]:
    import re

    workdir = ctx.dir("dag")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "configs" / "paper.yaml"), "-n", "--quiet", "rules", "--cores", "2"]

    def plan():
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
        if done.returncode:
            raise RuntimeError(f"snakemake -n failed ({done.returncode}): {done.stderr[-2000:]}")
        found = re.search(r"^total\s+(\d+)", done.stdout, re.MULTILINE)
        return int(found.group(1)) if found else None

    def import_slurm_plugin():
        # Snakemake imports every executor plugin; where SLURM's client tools are installed the SLURM plugin
        # asks `scontrol show config` for MinJobAge at import, which waits ~9 s when no slurmctld answers.
        subprocess.run([sys.executable, "-c", "import snakemake_executor_plugin_slurm"], check=True)

    times, jobs = time_once(plan, ctx.work.dag_reps, torch.device("cpu"))
    probe, _ = time_once(import_slurm_plugin, ctx.work.dag_reps, torch.device("cpu"))
    import statistics

    median, probe_median = statistics.median(times), statistics.median(probe)
    return [{"stage": "DAG planning (paper.yaml, snakemake -n)", "unit": "s", "ours_median_s": median,
             "ours_s": times, "reference_median_s": None, "speedup": None, "jobs": jobs, "outputs_equal": None,
             "slurm_plugin_import_s": probe, "planning_without_plugin_import_s": median - probe_median,
             "equal_text": f"{jobs} jobs; {probe_median:.1f} s of it is importing the SLURM plugin (no reference)",
             "work": {"config": "configs/paper.yaml"}}]


STAGES = {
    "lora": stage_lora,
    "generation": stage_generation,
    "classifier_eval": stage_classifier_eval,
    "classifier_train": stage_classifier_train,
    "fid": stage_fid,
    "dag": stage_dag,
}
