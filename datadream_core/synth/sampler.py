"""The sharded, deterministic, resumable generation loop every generator plugs into.

Image i of class c under seed s starts from noise drawn by a generator seeded with (s, c, i) alone,
so it is the same image whatever the shard size, the batch size or the number of GPUs. A shard is made
in a hidden staging folder beside its final one (`.shard000.partial`), where finished PNGs are written
atomically, so a job killed half way keeps them and a rerun makes only the rest; the finished shard is
then renamed into place, so the declared output folder only ever holds a whole shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, PngImagePlugin

from datadream_core.io import LOG, atomic_path, publish_folder, write_csv
from datadream_core.jobs import progress
from datadream_core.seeding import seeded_generator
from datadream_core.synth.manifest import SHARD_HEADER


# A renderer turns prompts plus per-image generators (and image indices) into PIL images.
Renderer = Callable[[Sequence[str], Sequence[torch.Generator], Sequence[int]], list[Image.Image]]


@dataclass(frozen=True)
class ClassShard:
    """Images start to stop of one class under one seed: one class's part of a generation job."""

    generator: str
    class_index: int
    prompt: str
    seed: int
    start: int
    stop: int
    identity: str = ""  # digest of all that makes the images (settings, model, adapter, prompt); stale ones are remade
    provenance: tuple[str, str, str] = ("", "", "")  # the IDENTITY_COLUMNS values


def image_generator(seed: int, class_index: int, image_index: int) -> torch.Generator:
    return seeded_generator(seed, class_index, image_index)


def image_name(image_index: int) -> str:
    return f"{image_index:06d}.png"


def _save_png(image: Image.Image, target: Path, shard: ClassShard, image_index: int) -> None:
    info = PngImagePlugin.PngInfo()
    for key, value in (("prompt", shard.prompt), ("seed", shard.seed), ("class_index", shard.class_index),
                       ("image_index", image_index), ("generator", shard.generator), ("identity", shard.identity)):
        info.add_text(key, str(value))
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def _is_current(path: Path, shard: ClassShard) -> bool:
    if not path.exists():
        return False
    try:
        with Image.open(path) as image:
            return image.text.get("identity", "") == shard.identity
    except OSError:
        return False


def staging_dir(out_dir: str | Path) -> Path:
    """Where a shard is made before it is published as `out_dir` (kept across a kill, for resuming)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def batches(indices: Sequence[int], batch_size: int):
    """Runs of at most `batch_size` indices, in order."""
    for begin in range(0, len(indices), batch_size):
        yield indices[begin:begin + batch_size]


def run_shard(shard: ClassShard, render: Renderer, out_dir: str | Path, batch_size: int) -> list[tuple]:
    """Make the shard's missing (or stale) images in its staging folder; return its rows (final paths).

    `publish_shard` then writes shard.csv and moves the shard into `out_dir`.
    """
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    staging.mkdir(parents=True, exist_ok=True)
    indices = list(range(shard.start, shard.stop))
    missing = [i for i in indices if not _is_current(staging / image_name(i), shard)]
    if len(missing) < len(indices):
        LOG.info("%s: %d of %d images made before; making the other %d", out_dir, len(indices) - len(missing),
                 len(indices), len(missing))
    bar = progress(len(indices), f"{shard.generator} c{shard.class_index:04d}", initial=len(indices) - len(missing), unit="img")
    for batch in batches(missing, batch_size):
        generators = [image_generator(shard.seed, shard.class_index, i) for i in batch]
        images = render([shard.prompt] * len(batch), generators, batch)
        for image_index, image in zip(batch, images):
            _save_png(image, staging / image_name(image_index), shard, image_index)
        bar.update(len(batch))
    bar.close()
    return [(str(out_dir / image_name(i)), shard.class_index, i, shard.seed, shard.prompt, shard.generator,
             *shard.provenance)
            for i in indices]


def publish_shard(out_dir: str | Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Write shard.csv into the staging folder and rename the finished shard onto `out_dir`."""
    staging = staging_dir(out_dir)
    write_csv(staging / "shard.csv", header, rows)
    publish_folder(staging, Path(out_dir))


def make_shard(shard: ClassShard, render: Renderer, out_dir: str | Path, batch_size: int) -> list[tuple]:
    """`run_shard`, then publish the shard with its shard.csv (generators without columns of their own)."""
    rows = run_shard(shard, render, out_dir, batch_size)
    publish_shard(out_dir, SHARD_HEADER, rows)
    return rows
