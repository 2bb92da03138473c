"""The CLIP classifier: its evaluation (once, and every epoch of a run) and its training step, ours against the
released code's, at 100 and 1000 classes."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch

from benchmarks import models, reference
from benchmarks.harness import compare
from benchmarks.stages.common import Context, ceiling_row, table_row


def classify_settings(**overrides):
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
    settings = classify_settings(eval_batch_size=256, workers=0)
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
    rows = [table_row(f"classifier eval, {n_classes} classes ({ctx.tag})", result, "s/image", equal, text, {
        "classes": n_classes, "images": len(examples), "image_size": work.eval_image_size,
        "ours_batch": settings.eval_batch_size, "reference_batch": 8, "context_ours": int(short.shape[1]),
        "context_reference": int(full.shape[1]), "workers": settings.workers,
        "timed": "whole evaluation incl. image decoding / images"})]

    rows.append(ceiling_row(f"classifier eval, {n_classes} classes ({ctx.tag})", result, "s/image",
                             "decoding and transforming every image, one image-tower pass per image, text features once"))

    if n_classes == work.eval_classes[0]:
        rows.append(classifier_eval_per_run(
            ctx, n_classes, lambda: eval_images(cache_mb=settings.eval_cache_mb),
            lambda images: evaluate(model, short, images, n_classes, settings, ctx.device, "eval").correct, ref, labels))

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
    return table_row(f"classifier eval, every epoch of a run, {n_classes} classes ({ctx.tag})", result, "s/image/epoch",
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
    settings = classify_settings(batch_size=work.train_batch)
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
    rows = [table_row(f"classifier train step, {n_classes} classes ({ctx.tag})", result, "s/step", equal, text, {
        "classes": n_classes, "batch": work.train_batch, "steps": work.train_steps,
        "context_ours": int(short.shape[1]), "context_reference": int(full.shape[1]),
        "reference_text_checkpointing": True, "mix_prob": settings.mix_prob,
        "timed": "_train_epoch over in-memory batches / steps"}, tolerance=tolerance)]
    return rows

