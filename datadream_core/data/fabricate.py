"""A fabricated copy of one of the paper's benchmarks in CoOp's on-disk layout: every class of the benchmark
(under the released code's names, so `class_names: released` reads it) with a few smooth random JPEGs of a real
photo's size, and CoOp's split file. The rehearsal (`make rehearse`) runs the paper's setting on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from datadream_core.data.sources import COOP_SPECS, released_class_names
from datadream_core.io import LOG, atomic_folder, atomic_path
from datadream_core.seeding import seeded_rng


def fabricated_image(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A colour gradient with a few blobs and sensor-like noise, `size` = (width, height)."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    canvas = rng.uniform(0, 255, 3) * (ys / height)[..., None] + rng.uniform(0, 255, 3) * (1 - ys / height)[..., None]
    for _ in range(3):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.4) * min(size)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))[..., None]
        canvas = canvas * (1 - blob) + rng.uniform(0, 255, 3) * blob
    canvas += rng.normal(0, 6, canvas.shape)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def fabricate_zhou_benchmark(folder: str | Path, coop_name: str, per_split: Mapping[str, int],
                             size: tuple[int, int], seed: int = 0) -> Path:
    """Write `folder` (the benchmark's CoOp folder, e.g. <root>/dtd) whole: per_split[split] images per class."""
    spec = COOP_SPECS[coop_name]
    names = released_class_names(coop_name)
    with atomic_folder(folder) as staging:
        split = {}
        for split_name, count in per_split.items():
            entries = []
            for label, name in enumerate(names):
                for index in range(count):
                    relative = f"{name}/{name}_{split_name}_{index:04d}.jpg"
                    path = staging / spec.image_dir / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fabricated_image(size, seeded_rng(seed, label, len(split), index)).save(path, quality=90)
                    entries.append([relative, label, name])
            split[split_name] = entries
        with atomic_path(staging / spec.split_file) as tmp:
            tmp.write_text(json.dumps(split), encoding="utf-8")
    LOG.info("fabricated %s in CoOp's layout at %s", coop_name, folder)
    return Path(folder)
