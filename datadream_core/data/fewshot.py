"""Nested few-shot sets: one seeded order per class, the K-shot set is `rank < K`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from datadream_core.data.sources import DatasetError
from datadream_core.data.table import ClassRow, SplitRow
from datadream_core.io import read_csv, write_csv
from datadream_core.seeding import seeded_rng

FEWSHOT_HEADER = ("path", "class_index", "rank")


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
    train_paths: list[list[str]] = [[] for _ in classes]
    for row in splits:
        if row.split == split:
            train_paths[row.class_index].append(row.path)
    shots = []
    for info in classes:
        paths = sorted(train_paths[info.index])
        if len(paths) < max_shots:
            wanted = f"the largest K = {max_shots}" if split == "train" else f"the {max_shots} to draw"
            raise DatasetError(
                f"class '{info.name}' (index {info.index}) has {len(paths)} usable {split} images,"
                f" fewer than {wanted}"
            )
        order = seeded_rng(seed, info.index).permutation(len(paths))[:max_shots]
        shots.extend(Shot(paths[position], info.index, rank) for rank, position in enumerate(order))
    return shots


def write_fewshot(path: str | Path, shots: Sequence[Shot]) -> None:
    write_csv(path, FEWSHOT_HEADER, ((shot.path, shot.class_index, shot.rank) for shot in shots))


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
