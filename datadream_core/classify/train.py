"""Train a CLIP classifier on one train set, select it on val (or take the last epoch), test it once.

The head is the zero-shot one: cosine similarity between image features and the text features of the
class prompts, times a frozen logit scale. Only the method's weights train (methods.py: LoRA in both
towers, CoOp's text context or VPT's image prompts); the loop below is the same for all three.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from datadream_core.checkpoint import load_checkpoint, save_checkpoint
from datadream_core.classify.data import (EvalImages, Example, make_loader, mix_within_parts, split_examples,
                                          train_examples, train_transform, validation_examples)
from datadream_core.classify.lora import encode_text, truncate_context
from datadream_core.classify.methods import (adapt_model, class_tokens, load_trainable_state, method_options,
                                             trainable_state)
from datadream_core.classify.trainsets import parse_trainset
from datadream_core.layout import classifier_checkpoint
from datadream_core.config import SPEED_ONLY_KEYS, settings_dataclass
from datadream_core.data.table import read_classes
from datadream_core.identity import digest, provenance_or_location
from datadream_core.io import LOG, write_csv, write_json
from datadream_core.models.clip import load_clip
from datadream_core.models.sd import compute_dtype
from datadream_core.seeding import seed_from

PER_CLASS_HEADER = ("class_index", "name", "correct", "total", "accuracy")


@dataclass(frozen=True)
class ClassifySettings:
    """The keys of a job's resolved classifier settings (trainsets.method_settings) that this module uses; the
    schema holds their defaults."""

    method: str
    lora_targets: Sequence[str]
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    logit_scale: float
    optimizer: str
    momentum: float
    learning_rate: float
    min_learning_rate: float
    weight_decay: float
    batch_size: int
    eval_batch_size: int
    epochs: int | None
    steps: int | None
    warmup_epochs: float
    real_weight: float
    mix_prob: float
    augment: str
    selection: str
    validation: str
    mixed_precision: str
    workers: int
    eval_cache_mb: float
    seed: int


@dataclass
class ClassCounts:
    correct: list[int]
    total: list[int]

    @property
    def accuracy(self) -> float:
        """Top-1 over all images (micro), in percent."""
        return 100.0 * sum(self.correct) / max(1, sum(self.total))

    def per_class(self) -> list[float | None]:
        """Accuracy of each class in percent; None for a class without images (JSON has no NaN)."""
        return [100.0 * c / t if t else None for c, t in zip(self.correct, self.total)]


@dataclass
class FitState:
    """Everything a checkpoint restores besides the model and optimizer."""

    epoch: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    val_accuracy: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)  # each epoch's mean loss on unmixed batches
    steps_done: list[int] = field(default_factory=list)  # optimiser steps taken by the end of each epoch
    train_seconds: float = 0.0
    selection_seconds: float = 0.0
    images_trained: int = 0


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warmup from `floor` to `peak`, then cosine back to `floor`, per iteration (the released schedule)."""
    if step < warmup_steps:
        return floor + (peak - floor) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, is_real: torch.Tensor, real_weight: float) -> torch.Tensor:
    """real_weight * CE(real part) + (1 - real_weight) * CE(synthetic part), each a mean over its own part.

    A part absent from the batch contributes nothing while the other keeps its weight (the released code
    divided by zero here), so a batch's gradient scale does not depend on which parts it happened to draw.
    """
    per_example = F.cross_entropy(logits, targets, reduction="none")
    loss = logits.new_zeros(())
    for part, weight in ((is_real, real_weight), (~is_real, 1.0 - real_weight)):
        if part.any():
            loss = loss + weight * per_example[part].mean()
    return loss


def text_features(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(encode_text(model, tokens).float(), dim=-1)


def class_logits(model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(model.encode_image(images).float(), dim=-1) @ texts.T


def _autocast(device: torch.device, mixed_precision: str):
    dtype = compute_dtype(mixed_precision, device)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokens: torch.Tensor, split: EvalImages, n_classes: int,
             settings: ClassifySettings, device: torch.device, desc: str) -> ClassCounts:
    """Per-class correct/total; the text features are computed once for the whole evaluation."""
    model.eval()
    correct, total = torch.zeros(n_classes, dtype=torch.long), torch.zeros(n_classes, dtype=torch.long)
    with _autocast(device, settings.mixed_precision):
        texts = text_features(model, tokens)
        for images, labels, _ in tqdm(split, desc=desc, leave=False):
            predicted = class_logits(model, images.to(device), texts, settings.logit_scale).argmax(dim=-1).cpu()
            total += torch.bincount(labels, minlength=n_classes)
            correct += torch.bincount(labels[predicted == labels], minlength=n_classes)
    return ClassCounts(correct.tolist(), total.tolist())


def _train_epoch(model, tokens, loader, optimizer, scaler, settings: ClassifySettings, real_weight: float,
                 n_classes: int, budget: StepBudget, epoch: int, device: torch.device, mix_rng: random.Random,
                 desc: str) -> tuple[int, float | None]:
    """Train one epoch, stopping early when the run's step budget ends in it.

    Returns the images seen and the mean loss of the epoch's unmixed batches (None when CutMix or MixUp took
    them all): a mixed batch's loss against soft targets is on another scale, and one of them in a short epoch
    would make the curve jump.
    """
    model.train()
    first_step = epoch * budget.per_epoch
    steps = budget.in_epoch(epoch)
    seen, clean_losses = 0, []
    bar = tqdm(loader, desc=desc, total=steps, leave=False)
    for step, (images, labels, is_real) in enumerate(bar, start=first_step):
        if step >= first_step + steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, budget.total, budget.warmup, settings.learning_rate,
                                           settings.min_learning_rate)
        images, labels, is_real = images.to(device), labels.to(device), is_real.to(device)
        mixed = mix_rng.random() < settings.mix_prob
        if mixed:
            images, targets = mix_within_parts(images, labels, is_real, n_classes)
        else:
            targets = F.one_hot(labels, n_classes).float()
        with _autocast(device, settings.mixed_precision):
            # The text tower runs once per step for all classes, as its LoRA changes every step.
            logits = class_logits(model, images, text_features(model, tokens), settings.logit_scale)
        loss = weighted_loss(logits.float(), targets, is_real, real_weight)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        seen += len(labels)
        if not mixed:
            clean_losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return seen, sum(clean_losses) / len(clean_losses) if clean_losses else None


def _save_checkpoint(path: Path, fingerprint: str, model, optimizer, scaler, state: FitState) -> None:
    save_checkpoint(path, fingerprint, optimizer, scaler, trained=trainable_state(model), state=asdict(state))


def _load_checkpoint(path: Path, fingerprint: str, model, optimizer, scaler) -> FitState:
    saved = load_checkpoint(path, fingerprint, optimizer, scaler, "trained", "state")
    if saved is None:
        return FitState()
    load_trainable_state(model, saved["trained"])
    LOG.info("resuming from %s after epoch %d", path, saved["state"]["epoch"])
    return FitState(**saved["state"])


@dataclass(frozen=True)
class StepBudget:
    """The optimiser steps of one run under the budget rule: `steps` whatever the train set's size, or `epochs`
    whole epochs when steps is null. The last epoch stops where the budget ends; every epoch end is a
    checkpoint and a selection point."""

    total: int
    per_epoch: int
    warmup: int

    @classmethod
    def of(cls, settings: ClassifySettings, n_train: int) -> StepBudget:
        per_epoch = math.ceil(n_train / settings.batch_size)
        total = settings.steps if settings.steps is not None else settings.epochs * per_epoch
        return cls(total, per_epoch, min(total, round(settings.warmup_epochs * per_epoch)))

    @property
    def epochs(self) -> int:
        return math.ceil(self.total / self.per_epoch)

    def in_epoch(self, epoch: int) -> int:
        return min(self.per_epoch, self.total - epoch * self.per_epoch)


def make_optimizer(parameters, settings: ClassifySettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.learning_rate, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer '{settings.optimizer}' (known: adamw, sgd)")


def fit(model, tokens, train: Sequence[Example], val: EvalImages, settings: ClassifySettings, real_weight: float,
        n_classes: int, train_tf, run_seed: Sequence[int], device: torch.device, checkpoint: Path,
        fingerprint: str) -> FitState:
    """Train the run's StepBudget, checkpointing every epoch; leave the selected trained state in the model.

    Every epoch reseeds all generators from (run_seed, epoch), so a resumed run repeats exactly what an
    uninterrupted one would have done from that epoch on.
    """
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and settings.mixed_precision == "fp16")
    state = _load_checkpoint(checkpoint, fingerprint, model, optimizer, scaler)
    budget = StepBudget.of(settings, len(train))
    epochs = budget.epochs
    select_on_val = settings.selection == "val" and len(val) > 0
    for epoch in tqdm(range(state.epoch, epochs), desc="epochs", initial=state.epoch, total=epochs):
        epoch_seed = seed_from(*run_seed, epoch + 1)
        _seed_everything(epoch_seed)
        loader = make_loader(train, train_tf, settings.batch_size, settings.workers, shuffle=True,
                             generator=torch.Generator().manual_seed(epoch_seed))
        started = time.perf_counter()
        seen, loss = _train_epoch(model, tokens, loader, optimizer, scaler, settings, real_weight, n_classes, budget,
                                  epoch, device, random.Random(epoch_seed), f"epoch {epoch + 1}")
        state.train_seconds += time.perf_counter() - started
        state.images_trained += seen
        state.train_loss.append(loss)
        state.steps_done.append(epoch * budget.per_epoch + budget.in_epoch(epoch))
        state.epoch = epoch + 1
        if select_on_val:
            started = time.perf_counter()
            accuracy = evaluate(model, tokens, val, n_classes, settings, device, "val").accuracy
            state.selection_seconds += time.perf_counter() - started
            state.val_accuracy.append(accuracy)
            LOG.info("epoch %d (step %d): loss %s, val accuracy %.2f%%", state.epoch, state.steps_done[-1],
                     "n/a (every batch mixed)" if loss is None else f"{loss:.4f}", accuracy)
            if accuracy > state.best_accuracy:
                state.best_accuracy, state.best_epoch, state.best_state = accuracy, state.epoch, trainable_state(model)
        _save_checkpoint(checkpoint, fingerprint, model, optimizer, scaler, state)
    if select_on_val:
        load_trainable_state(model, state.best_state)
    else:
        state.best_epoch = state.epoch
    return state


def run_classifier(*, dataset: str, trainset: str, shots: int, seed: int, n_synth: int, classes_csv: str | Path,
                   splits_csv: str | Path, clip: Mapping, settings: Mapping, metrics_json: str | Path, per_class_csv: str | Path,
                   fewshot_csv: str | Path | None = None, manifest_csv: str | Path | None = None,
                   checkpoint: str | Path | None = None, device: str | None = None,
                   provenance: Mapping[str, str] | None = None) -> dict:
    """Train (unless zero-shot), select, evaluate on test once, write metrics.json and per_class.csv.

    `clip` is the validated `models.clip` config section and `settings` the job's resolved classifier settings,
    `trainsets.method_settings(config["classify"], method, shots)`; `seed` is the few-shot seed, combined with
    classify.seed for every random choice. `provenance` (settings digest, model identity, data identity) is
    recorded in metrics.json.
    """
    provenance = provenance_or_location(provenance, clip.get("name"), clip.get("pretrained", ""))
    spec = parse_trainset(trainset)
    if settings.get("method") != spec.method:
        raise ValueError(f"train set '{trainset}' trains method '{spec.method}', but the classifier settings are for"
                         f" '{settings.get('method')}' (resolve them with trainsets.method_settings)")
    training = settings_dataclass(ClassifySettings, settings)
    options = method_options(settings, spec.method)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = Path(checkpoint or classifier_checkpoint(metrics_json))
    classes = read_classes(classes_csv)
    n_classes = len(classes)
    run_seed = (training.seed, seed)
    _seed_everything(seed_from(*run_seed, 0))

    loaded = load_clip(clip["name"], clip.get("pretrained", ""), device="cpu")
    model = loaded.model
    if spec.trains:
        adapt_model(model, spec.method, training, options)
    model.to(device)
    tokens = truncate_context(model, class_tokens(model, loaded.tokenize, classes, spec.method, options)).to(device)
    image_format = (loaded.image_size, loaded.mean, loaded.std)

    train: list[Example] = []
    fitted = FitState()
    selection = "none"
    n_val = 0
    if spec.trains:
        real_weight = training.real_weight if spec.uses_real and spec.generator else float(spec.uses_real)
        train = train_examples(spec, fewshot_csv, shots, manifest_csv, n_synth, n_classes)
        # val is evaluated every epoch: decoded once and kept in memory when it fits classify.eval_cache_mb
        val = EvalImages(validation_examples(splits_csv, classes, shots, seed, training.validation)
                         if training.selection == "val" else [], *image_format,
                         training.eval_batch_size, training.workers, training.eval_cache_mb)
        n_val = len(val)
        selection = training.selection if training.selection == "last" or n_val else "last"
        if selection != training.selection:
            LOG.warning("%s has no val split: selecting the last epoch instead", splits_csv)
        determining = {key: value for key, value in asdict(training).items() if key not in SPEED_ONLY_KEYS["classify"]}
        fingerprint = digest(determining, trainset, shots, seed, n_synth, provenance,
                             [asdict(example) for example in train])
        train_tf = train_transform(training.augment, loaded.image_size, loaded.mean, loaded.std)
        fitted = fit(model, tokens, train, val, training, real_weight, n_classes, train_tf, run_seed, device,
                     checkpoint, fingerprint)

    # The test split is read only now, after training and selection are final.
    test = split_examples(splits_csv, "test")
    if not test:
        raise ValueError(f"{splits_csv} has no test images")
    started = time.perf_counter()
    counts = evaluate(model, tokens, EvalImages(test, *image_format, training.eval_batch_size, training.workers),
                      n_classes, training, device, "test")
    eval_seconds = time.perf_counter() - started

    write_csv(per_class_csv, PER_CLASS_HEADER, (
        (row.index, row.name, counts.correct[row.index], counts.total[row.index], counts.per_class()[row.index])
        for row in classes))
    metrics = {
        "dataset": dataset, "trainset": trainset, "shots": shots, "seed": seed, "n_synth": n_synth,
        "accuracy": counts.accuracy, "per_class_accuracy": counts.per_class(),
        "method": spec.method, "selection": selection, "requested_selection": training.selection,
        "validation": training.validation if selection == "val" else None, "n_val_images": n_val,
        "selected_epoch": fitted.best_epoch, "epochs": fitted.epoch, "steps": (fitted.steps_done or [0])[-1],
        "val_accuracy": fitted.val_accuracy, "train_loss": fitted.train_loss, "steps_done": fitted.steps_done,
        "selected_val_accuracy": fitted.best_accuracy if selection == "val" else None,
        "classify": dict(settings), "clip": dict(clip), "made_from": provenance, "device": str(device),
        "n_train_images": len(train), "n_test_images": len(test),
        "train_seconds": fitted.train_seconds, "selection_seconds": fitted.selection_seconds,
        "train_images_per_second": fitted.images_trained / fitted.train_seconds if fitted.train_seconds else 0.0,
        "eval_seconds": eval_seconds, "eval_images_per_second": len(test) / eval_seconds,
    }
    write_json(metrics_json, metrics)
    checkpoint.unlink(missing_ok=True)
    LOG.info("%s %s k%d seed%d n%d: test accuracy %.2f%%", dataset, trainset, shots, seed, n_synth, counts.accuracy)
    return metrics
