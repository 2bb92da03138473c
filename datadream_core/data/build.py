"""Dispatch a config's dataset entry to its source reader."""

from __future__ import annotations

from pathlib import Path

from datadream_core.config import DatasetSpec
from datadream_core.data.miniworld import WORLD_CLASSES
from datadream_core.data.sources import COOP_SPECS, DatasetError, DatasetIndex, read_coop, read_imagefolder
from datadream_core.layout import world_images


def index_dataset(spec: DatasetSpec, world_dir: str | Path | None = None, verify: bool = True,
                  workers: int = 1) -> DatasetIndex:
    """Index `spec`'s images; a miniworld dataset is read from `world_dir` (default: where the workflow renders it)."""
    if spec.source == "coop":
        name = spec.coop_name or spec.name
        return read_coop(spec.root, name, spec.class_names, spec.domain_word, verify=verify, workers=workers,
                         expected_classes=COOP_SPECS[name].num_classes)
    root = spec.root if spec.source == "imagefolder" else (world_dir or world_images(spec.name))
    return read_imagefolder(root, spec.class_names, spec.split, spec.domain_word or "", verify=verify, workers=workers)


def class_count(spec: DatasetSpec) -> int:
    """The number of classes, known before indexing, so the DAG can plan per-class jobs.

    CoOp benchmarks have fixed sizes; an ImageFolder's classes are its (split) folders' subfolders.
    """
    if spec.source == "coop":
        return COOP_SPECS[spec.coop_name or spec.name].num_classes
    if spec.source == "miniworld":
        return dict(spec.world or {}).get("num_classes", len(WORLD_CLASSES))
    root = Path(spec.root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root} (dataset '{spec.name}')")
    bases = [root / split for split in ("train", "val", "test") if (root / split).is_dir()] or [root]
    return len({child.name for base in bases for child in base.iterdir() if child.is_dir() and not child.name.startswith(".")})
