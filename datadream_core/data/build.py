"""Dispatch a config's dataset entry to its source reader, and write the dataset's tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from datadream_core.config import DatasetSpec
from datadream_core.data.fewshot import SplitNeed, check_split_sizes
from datadream_core.data.images import ImageLimits
from datadream_core.data.miniworld import WORLD_CLASSES
from datadream_core.data.sources import (COOP_SPECS, DatasetError, DatasetIndex, display_names, list_class_folders,
                                         read_coop, read_imagefolder)
from datadream_core.data.table import write_index, write_problems
from datadream_core.io import LOG, write_json
from datadream_core.layout import world_images



def index_dataset(spec: DatasetSpec, world_dir: str | Path | None = None, verify: bool = True, workers: int = 1,
                  limits: ImageLimits = ImageLimits()) -> DatasetIndex:
    """Index `spec`'s images; a miniworld dataset is read from `world_dir` (default: where the workflow renders it)."""
    if spec.source == "coop":
        name = spec.coop_name or spec.name
        return read_coop(spec.root, name, spec.class_names, spec.domain_word, verify=verify, workers=workers,
                         expected_classes=COOP_SPECS[name].num_classes, limits=limits,
                         first_classes=spec.num_classes)
    root = spec.root if spec.source == "imagefolder" else (world_dir or world_images(spec.name))
    return read_imagefolder(root, spec.class_names, spec.split, spec.domain_word or "", verify=verify, workers=workers,
                            limits=limits)


def index_and_write(spec: DatasetSpec, prompt_template: str, classes_csv: str | Path, splits_csv: str | Path,
                    problems_csv: str | Path, world_dir: str | Path | None = None, verify: bool = True,
                    workers: int = 1, limits: ImageLimits = ImageLimits(),
                    needs: tuple[SplitNeed, ...] = ()) -> DatasetIndex:
    """Index the dataset, check its splits against the counts the config will draw (`needs`, from
    `split_needs`), and write classes.csv, splits.csv and problems.csv.

    When the dataset cannot be used, the files left out so far still go to problems.csv and, one
    line each, to the log (Snakemake removes a failed job's outputs, but keeps its log) before the error.
    """
    try:
        index = index_dataset(spec, world_dir, verify=verify, workers=workers, limits=limits)
        check_split_sizes(index.classes, index.split_counts(), needs, f"dataset '{spec.name}'", index.problems)
    except DatasetError as error:
        write_problems(problems_csv, error.problems)
        for path, reason in sorted(error.problems):
            LOG.warning("left out: %s: %s", path, reason)
        raise
    write_index(index, prompt_template, classes_csv, splits_csv, problems_csv)
    return index


def index_dataset_job(dataset: str, entry: Mapping[str, Any], root: Mapping[str, Any], data_identity: str,
                      prompt_template: str, verify_images: bool, max_megapixels: float, min_image_side: int,
                      needs: tuple[SplitNeed, ...], classes: str | Path, splits: str | Path, problems: str | Path,
                      identity_json: str | Path, threads: int = 1) -> None:
    """Index the dataset of config entry `entry` (where its files are: `root`) into its tables, and record its
    `data_identity` for the jobs that read them."""
    spec = DatasetSpec.from_entry(dataset, {**entry, **root})
    index = index_and_write(spec, prompt_template, classes, splits, problems, verify=verify_images, workers=threads,
                            limits=ImageLimits(max_megapixels, min_image_side), needs=needs)
    write_json(identity_json, {"data_identity": data_identity})
    counts = index.split_counts()
    LOG.info("%s (%s): %d classes; train/val/test images %d/%d/%d; %d files left out (problems.csv)", spec.name,
             data_identity, len(index.classes), counts["train"].sum(), counts["val"].sum(), counts["test"].sum(),
             len(index.problems))


def class_count(spec: DatasetSpec) -> int:
    """The number of classes, known before indexing, so the DAG can plan per-class jobs.

    CoOp benchmarks have fixed sizes; an ImageFolder's classes are found as `read_imagefolder` finds them, and
    their names checked (folders that are one name, `class_names` entries naming no folder) before any job runs.
    """
    if spec.source == "coop":
        return spec.num_classes or COOP_SPECS[spec.coop_name or spec.name].num_classes
    if spec.source == "miniworld":
        return dict(spec.world or {}).get("num_classes", len(WORLD_CLASSES))
    root = Path(spec.root)
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root} (dataset '{spec.name}')")
    folders = list_class_folders(root)
    try:
        display_names(folders, spec.class_names)
    except DatasetError as error:
        raise DatasetError(f"dataset '{spec.name}': {error}") from None
    return len(folders)
