"""Job units: class chunks of per-class stages ("c0000-c0007" = classes 0..7) and image shards.

One class per chunk gives one job per class (the paper's scale); bigger chunks amortise the
seconds of start-up each job pays on small CPU configs. Outputs stay per class either way.
"""

from __future__ import annotations

import math
import re

CHUNK_PATTERN = r"c\d{4}-c\d{4}"


def chunk_name(first: int, last: int) -> str:
    return f"c{first:04d}-c{last:04d}"


def class_chunks(n_classes: int, classes_per_job: int) -> list[str]:
    return [chunk_name(first, min(first + classes_per_job, n_classes) - 1)
            for first in range(0, n_classes, classes_per_job)]


def chunk_classes(name: str) -> range:
    match = re.fullmatch(r"c(\d{4})-c(\d{4})", name)
    if not match or int(match.group(1)) > int(match.group(2)):
        raise ValueError(f"'{name}' is not a class chunk like c0000-c0007")
    return range(int(match.group(1)), int(match.group(2)) + 1)


def chunk_of(class_index: int, n_classes: int, classes_per_job: int) -> str:
    first = class_index - class_index % classes_per_job
    return chunk_name(first, min(first + classes_per_job, n_classes) - 1)


def shard_count(n_images: int, shard_size: int | None) -> int:
    return 1 if not shard_size else math.ceil(n_images / shard_size)


def shard_range(n_images: int, shard_size: int | None, shard: int) -> tuple[int, int]:
    if shard >= shard_count(n_images, shard_size):
        raise ValueError(f"shard {shard} does not exist for {n_images} images in shards of {shard_size}")
    if not shard_size:
        return 0, n_images
    return shard * shard_size, min(n_images, (shard + 1) * shard_size)
