"""The dataset's on-disk tables: classes.csv, splits.csv and problems.csv."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from datadream_core.data.sources import DatasetIndex
from datadream_core.io import read_csv, write_csv

CLASSES_HEADER = ("index", "name", "folder", "prompt")
SPLITS_HEADER = ("path", "class_index", "split")
PROBLEMS_HEADER = ("path", "reason")


@dataclass(frozen=True)
class ClassRow:
    index: int
    name: str
    folder: str
    prompt: str


@dataclass(frozen=True)
class SplitRow:
    path: str
    class_index: int
    split: str


def make_prompt(template: str, domain_word: str, name: str) -> str:
    return template.format(domain=domain_word, name=name)


def write_index(index: DatasetIndex, prompt_template: str, classes_csv: str | Path,
                splits_csv: str | Path, problems_csv: str | Path) -> None:
    write_csv(classes_csv, CLASSES_HEADER, (
        (info.index, info.name, info.folder, make_prompt(prompt_template, index.domain_word, info.name))
        for info in index.classes))
    ordered = sorted(index.items, key=lambda item: (item.class_index, item.split, item.path))
    write_csv(splits_csv, SPLITS_HEADER, ((item.path, item.class_index, item.split) for item in ordered))
    write_problems(problems_csv, index.problems)


def write_problems(problems_csv: str | Path, problems: Sequence[tuple[str, str]]) -> None:
    write_csv(problems_csv, PROBLEMS_HEADER, sorted(problems))


def read_classes(path: str | Path) -> list[ClassRow]:
    return [ClassRow(int(row["index"]), row["name"], row["folder"], row["prompt"]) for row in read_csv(path)]


def read_splits(path: str | Path, split: str | None = None) -> list[SplitRow]:
    rows = [SplitRow(row["path"], int(row["class_index"]), row["split"]) for row in read_csv(path)]
    return rows if split is None else [row for row in rows if row.split == split]


def prompts_of(classes: Sequence[ClassRow]) -> list[str]:
    return [row.prompt for row in classes]
