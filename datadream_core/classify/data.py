"""What the classifier reads: labelled image lists, the released augmentations, and within-part mixing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import v2

from datadream_core.classify.trainsets import TrainSet
from datadream_core.data.fewshot import FEWSHOT_VAL_MAX, read_fewshot, sample_fewshot
from datadream_core.data.images import load_rgb
from datadream_core.data.sources import DatasetError
from datadream_core.data.table import ClassRow, read_splits
from datadream_core.io import read_csv


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    is_real: bool


def split_examples(splits_csv: str | Path, split: str) -> list[Example]:
    return [Example(row.path, row.class_index, True) for row in read_splits(splits_csv, split)]


def validation_examples(splits_csv: str | Path, classes: Sequence[ClassRow], shots: int, seed: int,
                        validation: str) -> list[Example]:
    """The images a run selects on: the whole val split (`full`), or (`fewshot`) min(K, 4) val images per class
    drawn with the few-shot seed the way the shots are drawn, so the set for K is nested in the set for a larger K
    and the same in every rerun."""
    if validation == "full":
        return split_examples(splits_csv, "val")
    if validation != "fewshot":
        raise ValueError(f"unknown validation set '{validation}' (known: fewshot, full)")
    rows = read_splits(splits_csv)
    if not any(row.split == "val" for row in rows):
        return []
    try:
        drawn = sample_fewshot(rows, classes, min(shots, FEWSHOT_VAL_MAX), seed, split="val")
    except DatasetError as error:
        raise DatasetError(f"{splits_csv}: few-shot validation set: {error}") from None
    return [Example(shot.path, shot.class_index, True) for shot in drawn]


def real_examples(fewshot_csv: str | Path, shots: int, repeats: int = 1) -> list[Example]:
    """The K-shot set, each image listed `repeats` times."""
    return [Example(shot.path, shot.class_index, True)
            for shot in read_fewshot(fewshot_csv, shots) for _ in range(repeats)]


def synth_examples(manifest_csv: str | Path, n_synth: int, n_classes: int) -> list[Example]:
    """The first `n_synth` images of every class by image index (stable whatever the shard layout)."""
    by_class: list[list[tuple[int, str]]] = [[] for _ in range(n_classes)]
    for row in read_csv(manifest_csv):
        class_index = int(row["class_index"])
        if not 0 <= class_index < n_classes:
            raise ValueError(f"{manifest_csv}: {row['path']} has class index {class_index}, but there are {n_classes} classes")
        by_class[class_index].append((int(row["image_index"]), row["path"]))
    short = {index: len(images) for index, images in enumerate(by_class) if len(images) < n_synth}
    if short:
        listing = ", ".join(f"class {index} has {count}" for index, count in short.items())
        raise ValueError(f"{manifest_csv}: fewer than n_synth = {n_synth} synthetic images ({listing})")
    return [Example(path, class_index, False)
            for class_index, images in enumerate(by_class) for _, path in sorted(images)[:n_synth]]


def train_examples(trainset: TrainSet, fewshot_csv: str | Path, shots: int, manifest_csv: str | Path | None,
                   n_synth: int, n_classes: int) -> list[Example]:
    """The training list of a train set; with both parts the real shots are repeated to balance the synthetic
    count per class, as the released code does (500 // 16 = 31 copies)."""
    examples = []
    if trainset.generator is not None:
        if manifest_csv is None:
            raise ValueError(f"train set '{trainset.name}' needs the manifest of generator '{trainset.generator}'")
        examples += synth_examples(manifest_csv, n_synth, n_classes)
    if trainset.uses_real:
        repeats = max(1, n_synth // shots) if trainset.generator is not None else 1
        examples += real_examples(fewshot_csv, shots, repeats)
    return examples


class PILGaussianBlur:
    """The released code's blur: PIL GaussianBlur with a radius drawn from U(low, high)."""

    def __init__(self, low: float = 0.1, high: float = 2.0):
        self.low, self.high = low, high

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.low, self.high)))


def train_transform(augment: str, size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """`released`: the released code's pipeline; `light`: crop and flip only, for worlds defined by colour."""
    finish = [T.ToTensor(), T.Normalize(mean, std)]
    bicubic = T.InterpolationMode.BICUBIC
    if augment == "released":
        return T.Compose([
            T.RandAugment(),
            T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([PILGaussianBlur()], p=0.2),
            T.RandomSolarize(threshold=128, p=0.2),
            *finish,
        ])
    if augment == "light":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=bicubic), T.RandomHorizontalFlip(), *finish])
    if augment == "none":
        return eval_transform(size, mean, std)
    raise ValueError(f"unknown augmentation '{augment}' (known: released, light, none)")


def eval_resize(size: int) -> Callable:
    """The deterministic part of the test transform: shorter side to `size` (bicubic), centre crop."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    return T.Compose([eval_resize(size), T.ToTensor(), T.Normalize(mean, std)])


class EvalImages:
    """An evaluation split, batched for one pass after another.

    A split evaluated every epoch (val) is decoded and resized once and kept as uint8 pixels when they fit in
    `cache_mb` MiB; each pass then only converts and normalises them, which gives exactly the tensors that
    eval_transform gives (ToTensor is the same uint8 / 255). Larger splits, and `cache_mb` 0, are decoded again
    on every pass in `workers` DataLoader workers.
    """

    def __init__(self, examples: Sequence[Example], size: int, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, workers: int, cache_mb: float = 0):
        self.examples = list(examples)
        self.size, self.batch_size, self.workers = size, batch_size, workers
        self.transform = eval_transform(size, mean, std)
        self._normalize = T.Normalize(mean, std)
        self.cached = 0 < self.nbytes <= cache_mb * 2**20
        self._pixels: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def nbytes(self) -> int:
        return len(self.examples) * 3 * self.size * self.size

    def _decode_all(self) -> torch.Tensor:
        resize = T.Compose([eval_resize(self.size), T.PILToTensor()])
        pixels = torch.empty((len(self.examples), 3, self.size, self.size), dtype=torch.uint8)  # filled in place
        start = 0
        for images, _, _ in make_loader(self.examples, resize, self.batch_size, self.workers):
            pixels[start:start + len(images)] = images
            start += len(images)
        return pixels

    def __iter__(self):
        """(images, labels, is_real) batches in the listed order."""
        if not self.cached:
            yield from make_loader(self.examples, self.transform, self.batch_size, self.workers)
            return
        if self._pixels is None:
            self._pixels = self._decode_all()
        labels = torch.tensor([example.label for example in self.examples])
        is_real = torch.tensor([example.is_real for example in self.examples])
        for start in range(0, len(self.examples), self.batch_size):
            stop = start + self.batch_size
            yield self._normalize(self._pixels[start:stop].float().div(255)), labels[start:stop], is_real[start:stop]


class ImageList(Dataset):
    """Decodes (in DataLoader workers) and transforms each listed image."""

    def __init__(self, examples: Sequence[Example], transform: Callable):
        self.examples = list(examples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int):
        example = self.examples[index]
        return self.transform(load_rgb(example.path)), example.label, example.is_real


def make_loader(examples: Sequence[Example], transform: Callable, batch_size: int, workers: int,
                shuffle: bool = False, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(ImageList(examples, transform), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=generator, pin_memory=torch.cuda.is_available())


def mix_within_parts(images: torch.Tensor, labels: torch.Tensor, is_real: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or MixUp (one drawn per part) inside the real part and inside the synthetic part, never across.

    Returns the mixed images and soft targets.
    """
    mixer = v2.RandomChoice([v2.CutMix(num_classes=num_classes), v2.MixUp(num_classes=num_classes)])
    images = images.clone()
    targets = torch.nn.functional.one_hot(labels, num_classes).to(images.dtype)
    for part in (is_real, ~is_real):
        if part.any():
            images[part], targets[part] = mixer(images[part], labels[part])
    return images, targets
