"""Nested few-shot sets: one seeded order per class, the K-shot set is `rank < K`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from datadream_core.config import dataset_section, fewshot_size
from datadream_core.data.sources import DatasetError, count_by_split
from datadream_core.data.table import ClassRow, SplitRow, read_classes, read_splits
from datadream_core.io import LOG, read_csv, write_csv
from datadream_core.seeding import seeded_rng

FEWSHOT_HEADER = ("path", "class_index", "rank")
# The few-shot protocol's validation set: min(K, 4) images per class.
FEWSHOT_VAL_MAX = 4


@dataclass(frozen=True)
class SplitNeed:
    """Images per class that the config will draw from one split, the setting that asks for them and the fix."""

    split: str
    count: int
    setting: str
    fix: str


def split_needs(config: Mapping[str, Any], dataset: str) -> tuple[SplitNeed, ...]:
    """Every per-class count the config will take from `dataset`'s splits: the shots (largest K), the few-shot
    validation set (min(K, 4), when classifiers select on it) and one test image to score each class on."""
    shots = fewshot_size(config)
    needs = [SplitNeed("train", shots, f"the largest K ({shots}, shots / scaling.shots)",
                       "lower the largest K or add train images")]
    classify = dataset_section(config, dataset, "classify")
    if classify["selection"] == "val" and classify["validation"] == "fewshot":
        overridden = set((config["datasets"][dataset].get("overrides") or {}).get("classify", {}))
        keys = " and ".join(f"datasets.{dataset}.overrides.classify.{key}" if key in overridden else f"classify.{key}"
                            for key in ("selection", "validation"))
        needs.append(SplitNeed("val", min(shots, FEWSHOT_VAL_MAX),
                               f"{keys} (val, fewshot: min(K, {FEWSHOT_VAL_MAX}) val images per class)",
                               "set validation: full or selection: last, or give the class more val images"))
    needs.append(SplitNeed("test", 1, "the classifiers' test split (every class is scored on its own images)",
                           "give the class test images"))
    return tuple(needs)


def check_split_sizes(classes: Sequence[ClassRow], counts: Mapping[str, Sequence[int]], needs: Sequence[SplitNeed],
                      where: str, problems: Sequence[tuple[str, str]] = ()) -> None:
    """Stop, naming every short class with its counts and what each setting needs, before any job draws from
    a split too small for it. A dataset without any val image is let through: classifiers then take the last
    epoch (train_classifier logs it), as on ImageNet, whose benchmark has no val split."""
    if sum(counts["val"]) == 0:
        needs = [need for need in needs if need.split != "val"]
    short = {info: [need for need in needs if counts[need.split][info.index] < need.count] for info in classes}
    short = {info: missing for info, missing in short.items() if missing}
    if not short:
        return
    listing = "; ".join(f"class '{info.name}' (folder '{info.folder}'): "
                        + ", ".join(f"{need.split} {counts[need.split][info.index]} of {need.count}" for need in missing)
                        for info, missing in short.items())
    unmet = [need for need in needs if any(need in missing for missing in short.values())]
    wanted = "; ".join(f"{need.split}: {need.count} per class for {need.setting}: {need.fix}" for need in unmet)
    raise DatasetError(f"{where}: {len(short)} of {len(classes)} classes have fewer images in a split than this"
                       f" config draws from it: {listing}. Needed: {wanted}", problems)


@dataclass(frozen=True)
class Shot:
    path: str
    class_index: int
    rank: int


def sample_fewshot(splits: Sequence[SplitRow], classes: Sequence[ClassRow], max_shots: int, seed: int,
                   split: str = "train") -> list[Shot]:
    """Draw `max_shots` images of `split` per class in a seeded order.

    Each class has its own generator seeded with (seed, class index), so adding a class or
    changing another class's images never changes a class's shots. The order is a prefix of one
    seeded permutation, so the sets for smaller counts are nested in it.
    """
    paths_of: list[list[str]] = [[] for _ in classes]
    for row in splits:
        if row.split == split:
            paths_of[row.class_index].append(row.path)
    short = [f"class '{info.name}' (index {info.index}) has {len(paths_of[info.index])}" for info in classes
             if len(paths_of[info.index]) < max_shots]
    if short:
        wanted = f"the largest K = {max_shots}" if split == "train" else f"the {max_shots} to draw"
        raise DatasetError(f"{'; '.join(short)} usable {split} images, fewer than {wanted}")
    shots = []
    for info in classes:
        paths = sorted(paths_of[info.index])
        order = seeded_rng(seed, info.index).permutation(len(paths))[:max_shots]
        shots.extend(Shot(paths[position], info.index, rank) for rank, position in enumerate(order))
    return shots


def draw_fewshot(classes_csv: str | Path, splits_csv: str | Path, max_shots: int, seed: int,
                 needs: Sequence[SplitNeed] = ()) -> list[Shot]:
    """The few-shot list of `seed` from the dataset's tables, once their splits hold what `needs` asks for
    (a larger K than the index was checked against is caught here, by the job that reruns for it)."""
    splits, classes = read_splits(splits_csv), read_classes(classes_csv)
    check_split_sizes(classes, count_by_split(splits, len(classes)), needs, str(splits_csv))
    return sample_fewshot(splits, classes, max_shots, seed)


def write_fewshot(path: str | Path, shots: Sequence[Shot]) -> None:
    write_csv(path, FEWSHOT_HEADER, ((shot.path, shot.class_index, shot.rank) for shot in shots))


def draw_fewshot_file(classes: str | Path, splits: str | Path, fewshot: str | Path, max_shots: int, seed: int,
                      needs: Sequence[SplitNeed] = ()) -> None:
    """Draw the nested few-shot list of `seed` from the dataset's tables into `fewshot`."""
    shots = draw_fewshot(classes, splits, max_shots, seed, needs)
    write_fewshot(fewshot, shots)
    LOG.info("wrote %d shots (%d per class)", len(shots), max_shots)


def read_fewshot(path: str | Path, shots: int | None = None) -> list[Shot]:
    """The K-shot set (`rank < shots`), or every listed shot when `shots` is None."""
    rows = [Shot(row["path"], int(row["class_index"]), int(row["rank"])) for row in read_csv(path)]
    if shots is None:
        return rows
    available = {}
    for row in rows:
        available[row.class_index] = available.get(row.class_index, 0) + 1
    short = {index: count for index, count in available.items() if count < shots}
    if short:
        raise DatasetError(f"{path} holds fewer than {shots} shots for classes {sorted(short)}")
    return [row for row in rows if row.rank < shots]
