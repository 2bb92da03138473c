"""LoRA training: one cls adapter (one class, one prompt), `train_datadream` against the released loop."""

from __future__ import annotations

import math

from benchmarks import models, reference
from benchmarks.harness import compare
from benchmarks.stages.common import Context, fresh, table_row


def lora_tensors(folder):
    from safetensors.torch import load_file

    from datadream_core.layout import LORA_FILE

    return load_file(str(folder / LORA_FILE))


def stage_lora(ctx: Context) -> list[dict]:
    """Whole adapter runs, per step: the workflow's `train_datadream` against the reference loop, each loading the
    model and training from the same LoRA initialisation and per-step randomness. The outputs are compared on a
    run with square shots, where cropping the cached latent and encoding the pixel crop are the same computation
    (with crops they differ at the crop edges by the VAE's receptive field, about 1e-3 relative in the loss)."""
    from datadream_core.dream import DreamSettings, Example, train_datadream
    from datadream_core.io import read_csv

    work = ctx.work
    sd = models.build_sd(ctx.root / f"sd_{ctx.tag}", work.real_size)
    paths = models.write_images(ctx.dir("lora_shots"), work.lora_images, work.lora_image_size, seed=1, fmt="jpg")
    examples = [Example(path, "a photo of a dax") for path in paths]
    side = min(work.lora_image_size)
    square = [Example(path, "a photo of a dax") for path in
              models.write_images(ctx.dir("lora_square"), work.lora_images, (side, side), seed=1, fmt="jpg")]
    settings = DreamSettings(rank=16, alpha=16, batch_size=work.lora_batch, epochs=work.lora_epochs, warmup_steps=100,
                             resolution=work.lora_resolution, checkpoint_every=10**9)
    steps = work.lora_epochs * math.ceil(len(examples) / settings.batch_size)

    ours_dir, ref_dir = ctx.dir("lora_ours"), ctx.dir("lora_reference")
    train_datadream(sd, square, ours_dir, settings, seed=ctx.seed, scope=1, device=str(ctx.device))
    ours_losses = [float(line["loss"]) for line in read_csv(ours_dir / "losses.csv")]
    ref_losses = reference.reference_train_lora(sd, square, settings, ctx.seed, 1, ctx.device, ref_dir)
    ours_w, ref_w = lora_tensors(ours_dir), lora_tensors(ref_dir)
    weight_diff = max(float((ours_w[k] - ref_w[k]).abs().max()) for k in ours_w)
    loss_diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_losses, ref_losses))
    tolerance = {"loss_rel": 1e-4, "lora_weight_abs": 1e-5}
    equal = (set(ours_w) == set(ref_w) and len(ours_losses) == len(ref_losses) == steps
             and loss_diff <= tolerance["loss_rel"] and weight_diff <= tolerance["lora_weight_abs"])
    text = f"{'yes' if equal else 'NO'} (loss rel {loss_diff:.1e}, LoRA max|d| {weight_diff:.1e})"

    ours_dirs, ref_dirs = fresh(ctx.dir("lora_timed_ours")), fresh(ctx.dir("lora_timed_reference"))

    def ours():
        train_datadream(sd, examples, ours_dirs(), settings, seed=ctx.seed, scope=1, device=str(ctx.device))

    def ref():
        reference.reference_train_lora(sd, examples, settings, ctx.seed, 1, ctx.device, ref_dirs())

    result = compare(ours, ref, work.reps, ctx.device, per=steps, warmup=work.reps > 1)
    return [table_row(f"lora train step ({ctx.tag})", result, "s/step", equal, text, {
        "images": len(examples), "image_size": work.lora_image_size, "image_format": "jpg",
        "batch": settings.batch_size, "steps_timed": steps, "resolution": settings.resolution or "model",
        "rank": settings.rank, "text_encoder_lora": True,
        "timed": "whole adapter runs (model load, latent cache, steps, adapter file) / steps",
        "equality_run": f"train_datadream vs reference loop, {steps} steps, square {side}px shots"},
        tolerance=tolerance)]
