"""The sharded, deterministic, resumable generation loop every generator plugs into.

Image i of class c under seed s starts from noise drawn by a generator seeded with (s, c, i) alone,
so it is the same image whatever the shard size, the batch size or the number of GPUs. Finished
PNGs are written atomically, so a shard killed half way keeps them and a rerun makes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from datadream_core.io import atomic_path, read_csv, write_csv
from datadream_core.jobs import LOG, progress

SHARD_HEADER = ("path", "class_index", "image_index", "seed", "prompt", "generator")

# A renderer turns prompts plus per-image generators (and image indices) into PIL images.
Renderer = Callable[[Sequence[str], Sequence[torch.Generator], Sequence[int]], list[Image.Image]]


@dataclass(frozen=True)
class ShardJob:
    generator: str
    class_index: int
    prompt: str
    seed: int
    start: int
    stop: int
    fingerprint: str = ""  # of the model, adapter and sampling settings; stale images are remade


def fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> list:
    """Cheap identity of a weights file: its name, size and modification time."""
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def image_seed(seed: int, class_index: int, image_index: int) -> int:
    state = np.random.SeedSequence([seed, class_index, image_index]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def image_generator(seed: int, class_index: int, image_index: int) -> torch.Generator:
    return torch.Generator().manual_seed(image_seed(seed, class_index, image_index))


def shard_count(n_images: int, shard_size: int | None) -> int:
    return 1 if not shard_size else math.ceil(n_images / shard_size)


def shard_range(n_images: int, shard_size: int | None, shard: int) -> tuple[int, int]:
    if shard >= shard_count(n_images, shard_size):
        raise ValueError(f"shard {shard} does not exist for {n_images} images in shards of {shard_size}")
    if not shard_size:
        return 0, n_images
    return shard * shard_size, min(n_images, (shard + 1) * shard_size)


def image_name(image_index: int) -> str:
    return f"{image_index:06d}.png"


def _save_png(image: Image.Image, target: Path, job: ShardJob, image_index: int) -> None:
    info = PngImagePlugin.PngInfo()
    for key, value in (("prompt", job.prompt), ("seed", job.seed), ("class_index", job.class_index),
                       ("image_index", image_index), ("generator", job.generator), ("fingerprint", job.fingerprint)):
        info.add_text(key, str(value))
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def _is_current(path: Path, job: ShardJob) -> bool:
    if not path.exists():
        return False
    try:
        with Image.open(path) as image:
            return image.text.get("fingerprint", "") == job.fingerprint
    except OSError:
        return False


def run_shard(job: ShardJob, render: Renderer, out_dir: str | Path, batch_size: int) -> list[tuple]:
    """Make the shard's missing (or stale) images, then write shard.csv listing all of them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    indices = list(range(job.start, job.stop))
    missing = [i for i in indices if not _is_current(out_dir / image_name(i), job)]
    if len(missing) < len(indices):
        LOG.info("%s: %d of %d images already exist; making the other %d", out_dir, len(indices) - len(missing),
                 len(indices), len(missing))
    bar = progress(len(indices), f"{job.generator} c{job.class_index:04d}", initial=len(indices) - len(missing), unit="img")
    for begin in range(0, len(missing), batch_size):
        batch = missing[begin:begin + batch_size]
        generators = [image_generator(job.seed, job.class_index, i) for i in batch]
        images = render([job.prompt] * len(batch), generators, batch)
        for image_index, image in zip(batch, images):
            _save_png(image, out_dir / image_name(image_index), job, image_index)
        bar.update(len(batch))
    bar.close()
    rows = [(str(out_dir / image_name(i)), job.class_index, i, job.seed, job.prompt, job.generator) for i in indices]
    write_csv(out_dir / "shard.csv", SHARD_HEADER, rows)
    return rows


def merge_manifest(shard_csvs: Sequence[str | Path], target: str | Path) -> int:
    """Concatenate shard.csv files into one manifest ordered by class and image index.

    A generator's own columns (IsSynth's source shot, DISEF's caption and filter attempts) are kept
    after the common ones.
    """
    rows = [row for path in shard_csvs for row in read_csv(path)]
    rows.sort(key=lambda row: (int(row["class_index"]), int(row["image_index"])))
    header = list(SHARD_HEADER)
    header += dict.fromkeys(key for row in rows for key in row if key not in SHARD_HEADER)
    write_csv(target, header, ([row.get(key, "") for key in header] for row in rows))
    return len(rows)
