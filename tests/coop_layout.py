"""Tiny fabricated copies of the paper's benchmarks in CoOp's on-disk layout (3 classes of 8-px images)."""

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from datadream_core.data.sources import COOP_SPECS

SPLIT_SIZES = {"train": 3, "val": 1, "test": 2}


def write_image(path: Path, value: int = 0) -> Path:
    """An 8-px image with noise seeded by its last path parts: files at different places differ in
    bytes, JPEG included (byte-identical files are duplicates, which indexing leaves out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32("/".join(path.parts[-3:]).encode("utf-8")))
    pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels[..., 0] = value
    Image.fromarray(pixels).save(path)
    return path


def zhou_tree(root: Path, coop_name: str, n_classes: int = 3) -> Path:
    """A benchmark described by one split_zhou_*.json (every one but ImageNet and FGVC-Aircraft)."""
    spec = COOP_SPECS[coop_name]
    base = root / spec.folder
    split = {}
    for split_name, per_class in SPLIT_SIZES.items():
        entries = []
        for label in range(n_classes):
            for i in range(per_class):
                relative = f"class_{label}/{split_name}_{i}.jpg"
                write_image(base / spec.image_dir / relative, label * 40)
                entries.append([relative, label, f"name {label}"])
        split[split_name] = entries
    (base / spec.split_file).write_text(json.dumps(split))
    return root


def aircraft_tree(root: Path) -> Path:
    base = root / "fgvc_aircraft"
    variants = ["707-320", "F-16A/B", "F/A-18"]
    (base / "images").mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    counter = 1000000
    for split_name, per_class in SPLIT_SIZES.items():
        lines = []
        for variant in variants:
            for _ in range(per_class):
                counter += 1
                write_image(base / "images" / f"{counter}.jpg")
                lines.append(f"{counter} {variant}")
        (base / f"images_variant_{split_name}.txt").write_text("\n".join(lines) + "\n")
    return root


def imagenet_tree(root: Path) -> Path:
    base = root / "imagenet"
    wnids = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark"}
    base.mkdir(parents=True)
    (base / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in wnids.items()))
    for wnid in wnids:
        for i in range(3):
            write_image(base / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        for i in range(2):
            write_image(base / "images" / "val" / wnid / f"val_{i}.JPEG")
    return root


def coop_root(root: Path) -> Path:
    """All ten benchmarks under one folder, as `root:` in configs/paper.yaml expects."""
    for coop_name in COOP_SPECS:
        if coop_name == "imagenet":
            imagenet_tree(root)
        elif coop_name == "fgvc_aircraft":
            aircraft_tree(root)
        else:
            zhou_tree(root, coop_name)
    return root
