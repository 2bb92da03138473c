"""Dispatch a config's dataset entry to its source reader."""

from __future__ import annotations

from pathlib import Path

from datadream_core.config import DatasetSpec
from datadream_core.data.sources import DatasetIndex, read_coop, read_imagefolder


def world_root(results_dir: str | Path, dataset: str) -> Path:
    """Where the workflow renders a miniworld dataset's images."""
    return Path(results_dir) / dataset / "world"


def index_dataset(spec: DatasetSpec, results_dir: str | Path = "results", verify: bool = True, workers: int = 1) -> DatasetIndex:
    if spec.source == "coop":
        return read_coop(spec.root, spec.coop_name or spec.name, spec.class_names, spec.domain_word,
                         verify=verify, workers=workers)
    root = spec.root if spec.source == "imagefolder" else world_root(results_dir, spec.name)
    return read_imagefolder(root, spec.class_names, spec.split, spec.domain_word or "", verify=verify, workers=workers)
