"""Dataset sources: an ImageFolder tree or one of the paper's benchmarks in the CoOp layout.

A source yields a `DatasetIndex`: the class list (index, display name, folder), every usable image
with its class and split, and the files left out with the reason. Paths use class INDICES later
on, so names may contain "/", spaces or unicode.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from datadream_core.data.images import check_image, is_candidate_file

RELEASED_NAMES_FILE = "released_class_names.json"

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """The dataset on disk cannot be used; the message names the file, folder or class at fault."""


@dataclass(frozen=True)
class ClassInfo:
    index: int
    name: str
    folder: str


@dataclass(frozen=True)
class Item:
    path: str
    class_index: int
    split: str


@dataclass
class DatasetIndex:
    classes: list[ClassInfo]
    items: list[Item]
    domain_word: str = ""
    problems: list[tuple[str, str]] = field(default_factory=list)

    def split_counts(self) -> dict[str, np.ndarray]:
        counts = {split: np.zeros(len(self.classes), dtype=int) for split in SPLITS}
        for item in self.items:
            counts[item.split][item.class_index] += 1
        return counts


# The paper's benchmarks in CoOp's layout (github.com/KaiyangZhou/CoOp DATASETS.md).
@dataclass(frozen=True)
class CoopSpec:
    folder: str
    image_dir: str
    split_file: str
    domain_word: str
    num_classes: int


COOP_SPECS: dict[str, CoopSpec] = {
    "imagenet": CoopSpec("imagenet", "images", "classnames.txt", "", 1000),
    "caltech101": CoopSpec("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "", 100),
    "dtd": CoopSpec("dtd", "images", "split_zhou_DescribableTextures.json", "texture ", 47),
    "eurosat": CoopSpec("eurosat", "2750", "split_zhou_EuroSAT.json", "satellite ", 10),
    "fgvc_aircraft": CoopSpec("fgvc_aircraft", "images", "variants.txt", "aircraft ", 100),
    "food101": CoopSpec("food-101", "images", "split_zhou_Food101.json", "food ", 101),
    "flowers102": CoopSpec("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "flower ", 102),
    "pets": CoopSpec("oxford_pets", "images", "split_zhou_OxfordPets.json", "pet ", 37),
    "cars": CoopSpec("stanford_cars", "", "split_zhou_StanfordCars.json", "car ", 196),
    "sun397": CoopSpec("sun397", "SUN397", "split_zhou_SUN397.json", "scene ", 397),
}


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}")


def _display_names(folders: Sequence[str], overrides: Mapping[str, str] | None) -> list[str]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(folders))
    if unknown:
        raise DatasetError(f"class_names names classes that do not exist: {', '.join(unknown)}")
    names = [overrides.get(folder, folder) for folder in folders]
    seen: dict[str, str] = {}
    for folder, name in zip(folders, names):
        if name in seen:
            raise DatasetError(f"duplicate class name '{name}' (classes '{seen[name]}' and '{folder}')")
        seen[name] = folder
    return names


def _verify(items: list[Item], workers: int, verify: bool) -> tuple[list[Item], list[tuple[str, str]]]:
    if not verify:
        return items, []
    paths = [item.path for item in items]
    if workers > 1 and len(paths) > 256:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(check_image, paths, chunksize=64))
    else:
        reasons = [check_image(path) for path in paths]
    kept = [item for item, reason in zip(items, reasons) if reason is None]
    problems = [(item.path, reason) for item, reason in zip(items, reasons) if reason is not None]
    return kept, problems


def _check_no_empty_class(classes: list[ClassInfo], items: list[Item], problems: list[tuple[str, str]]) -> None:
    counts = np.bincount([item.class_index for item in items], minlength=len(classes))
    for info in classes:
        if counts[info.index] == 0:
            raise DatasetError(
                f"class '{info.name}' (folder '{info.folder}') has no usable images"
                f" ({len(problems)} files in the dataset were left out, see problems.csv)"
            )


def _stratified_split(items: list[Item], n_classes: int, val_fraction: float, test_fraction: float, seed: int) -> list[Item]:
    by_class: list[list[Item]] = [[] for _ in range(n_classes)]
    for item in sorted(items, key=lambda it: it.path):
        by_class[item.class_index].append(item)
    result = []
    for class_index, members in enumerate(by_class):
        order = np.random.default_rng([seed, class_index]).permutation(len(members))
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(val_fraction * len(members)))
        for position, member_index in enumerate(order):
            split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            member = members[member_index]
            result.append(Item(member.path, member.class_index, split))
    return sorted(result, key=lambda it: (it.split, it.class_index, it.path))


def _files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if is_candidate_file(path) and not
                  any(part.startswith(".") for part in path.relative_to(folder).parts))


def read_imagefolder(
    root: str | Path,
    class_names: Mapping[str, str] | None = None,
    split: Mapping[str, float] | None = None,
    domain_word: str = "",
    verify: bool = True,
    workers: int = 1,
) -> DatasetIndex:
    """`root/<class>/<image>`, or `root/{train,val,test}/<class>/<image>`."""
    root = Path(root)
    _require_dir(root, "dataset root")
    has_splits = (root / "train").is_dir()
    split_roots = {name: root / name for name in SPLITS if (root / name).is_dir()} if has_splits else {"": root}
    folders = sorted({child.name for base in split_roots.values() for child in base.iterdir()
                      if child.is_dir() and not child.name.startswith(".")})
    if not folders:
        raise DatasetError(f"dataset root {root} holds no class folders")
    names = _display_names(folders, class_names)
    classes = [ClassInfo(index, name, folder) for index, (name, folder) in enumerate(zip(names, folders))]
    items = []
    for split_name, base in split_roots.items():
        for info in classes:
            for path in _files_under(base / info.folder) if (base / info.folder).is_dir() else []:
                items.append(Item(str(path), info.index, split_name or "train"))
    for info in classes:
        if not any(item.class_index == info.index for item in items):
            raise DatasetError(f"class folder '{info.folder}' in {root} is empty")
    items, problems = _verify(items, workers, verify)
    _check_no_empty_class(classes, items, problems)
    if not has_splits:
        split = dict(split or {})
        items = _stratified_split(items, len(classes), split.get("val_fraction", 0.1),
                                  split.get("test_fraction", 0.2), split.get("seed", 0))
    return DatasetIndex(classes, items, domain_word, problems)


def _check_listed_images(listed: Iterable[tuple[Path, int, str]], listing_file: Path) -> list[Item]:
    items, missing = [], []
    for path, class_index, split_name in listed:
        if path.exists():
            items.append(Item(str(path), class_index, split_name))
        else:
            missing.append(f"{path} ({split_name})")
    if missing:
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(f"split file {listing_file} names {len(missing)} missing image(s): {shown}")
    return items


def _read_zhou_split(base: Path, spec: CoopSpec) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    split_file = base / spec.split_file
    _require_file(split_file, "split file")
    try:
        data = json.loads(split_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"split file {split_file} is not valid JSON: {exc}") from None
    image_root = base / spec.image_dir
    names: dict[int, str] = {}
    listed = []
    for split_name in SPLITS:
        for entry in data.get(split_name, []):
            if not (isinstance(entry, list) and len(entry) == 3):
                raise DatasetError(f"split file {split_file}: entry {entry!r} in '{split_name}' is not [path, label, name]")
            relative, label, name = entry
            if names.setdefault(int(label), name) != name:
                raise DatasetError(f"split file {split_file}: label {label} is named both '{names[label]}' and '{name}'")
            listed.append((image_root / relative, int(label), split_name))
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"split file {split_file}: labels are not 0..{len(names) - 1}")
    return [names[label] for label in range(len(names))], listed, split_file


def _read_aircraft(base: Path, spec: CoopSpec) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    variants_file = base / spec.split_file
    _require_file(variants_file, "split file")
    variants = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    label_of = {name: index for index, name in enumerate(variants)}
    listed = []
    for split_name in SPLITS:
        list_file = base / f"images_variant_{split_name}.txt"
        _require_file(list_file, "split file")
        for line in list_file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            image_id, variant = line.strip().split(" ", 1)
            if variant not in label_of:
                raise DatasetError(f"split file {list_file} names variant '{variant}' missing from {variants_file}")
            listed.append((base / spec.image_dir / f"{image_id}.jpg", label_of[variant], split_name))
    return variants, listed, base / "images_variant_*.txt"


def _read_imagenet(base: Path, spec: CoopSpec) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    names_file = base / spec.split_file
    _require_file(names_file, "class-name file")
    wnids, names = [], []
    for line in names_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, name = line.strip().split(" ", 1)
            wnids.append(wnid)
            names.append(name)
    listed = []
    # ImageNet's labelled val set is the benchmark's test set; it has no separate validation split.
    for folder, split_name in (("train", "train"), ("val", "test")):
        split_root = base / spec.image_dir / folder
        _require_dir(split_root, f"ImageNet {folder} folder")
        for label, wnid in enumerate(wnids):
            class_dir = split_root / wnid
            _require_dir(class_dir, f"ImageNet class folder for '{names[label]}'")
            listed.extend((path, label, split_name) for path in _files_under(class_dir))
    return names, listed, names_file


COOP_READERS: dict[str, Callable] = {"imagenet": _read_imagenet, "fgvc_aircraft": _read_aircraft}


def released_class_names(coop_name: str) -> list[str]:
    """The released DataDream code's class names of a benchmark, in its label order (its prompts and heads used them)."""
    from importlib import resources

    lists = json.loads((resources.files("datadream_core.data") / RELEASED_NAMES_FILE).read_text(encoding="utf-8"))
    if coop_name not in lists["datasets"]:
        raise DatasetError(f"no released class names for '{coop_name}' (known: {', '.join(sorted(lists['datasets']))})")
    return lists["datasets"][coop_name]


def _name_keys(text: str) -> tuple[str, tuple[str, ...]]:
    """A name without case and separators, whole and as a bag of words (Cars put the year first or last)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "".join(words), tuple(sorted(words))


def _same_class(released: str, candidates: Sequence[str]) -> bool:
    whole, bag = _name_keys(released)
    return any(whole == other[0] or bag == other[1] for other in map(_name_keys, candidates))


def check_released_order(dataset: str, released: Sequence[str], coop_names: Sequence[str],
                         folders: Sequence[set[str]], listing_file: Path) -> None:
    """Each released name must name the class of the same label: its CoOp name or its image folder.

    EuroSAT's CoOp names ("Annual Crop Land") differ from the released ones ("AnnualCrop") but its folders do not.
    """
    if len(released) != len(coop_names):
        raise DatasetError(f"{dataset}: the released class names list {len(released)} classes, {listing_file} lists {len(coop_names)}")
    for label, (name, coop, label_folders) in enumerate(zip(released, coop_names, folders)):
        if not _same_class(name, [coop, *label_folders]):
            raise DatasetError(f"{dataset}: released class name '{name}' of label {label} does not match label {label}"
                               f" of {listing_file} ('{coop}', folders {sorted(label_folders) or 'none'}); the released"
                               f" names follow the CoOp label order, so this copy of the dataset orders its labels otherwise")


def _label_folders(listed: Sequence[tuple[Path, int, str]], base: Path, n_classes: int) -> list[set[str]]:
    """The first folder under `base` of each label's images (EuroSAT: AnnualCrop/...), empty when flat."""
    folders: list[set[str]] = [set() for _ in range(n_classes)]
    for path, label, _ in listed:
        parts = path.relative_to(base).parts
        if len(parts) > 1:
            folders[label].add(parts[0])
    return folders


def read_coop(
    root: str | Path,
    coop_name: str,
    class_names: Mapping[str, str] | str | None = None,
    domain_word: str | None = None,
    verify: bool = True,
    workers: int = 1,
    expected_classes: int | None = None,
) -> DatasetIndex:
    """One of the paper's 10 benchmarks, with CoOp's splits and the paper's domain word.

    `class_names`: a map from CoOp name to display name, or "released" for the released code's names.
    """
    if coop_name not in COOP_SPECS:
        raise DatasetError(f"unknown CoOp dataset '{coop_name}' (known: {', '.join(sorted(COOP_SPECS))})")
    spec = COOP_SPECS[coop_name]
    base = Path(root) / spec.folder
    _require_dir(Path(root), "dataset root")
    _require_dir(base, f"{coop_name} folder")
    raw_names, listed, listing_file = COOP_READERS.get(coop_name, _read_zhou_split)(base, spec)
    if expected_classes is not None and len(raw_names) != expected_classes:
        # The workflow plans one job per class before reading the data, from the benchmark's known size.
        raise DatasetError(f"{listing_file} lists {len(raw_names)} classes; {coop_name} has {expected_classes}")
    if class_names == "released":
        names = released_class_names(coop_name)
        check_released_order(coop_name, names, raw_names, _label_folders(listed, base / spec.image_dir, len(raw_names)),
                             listing_file)
        names = _display_names(names, None)
    else:
        names = _display_names(raw_names, class_names)
    classes = [ClassInfo(index, name, raw) for index, (name, raw) in enumerate(zip(names, raw_names))]
    items = _check_listed_images(listed, listing_file)
    items, problems = _verify(items, workers, verify)
    _check_no_empty_class(classes, items, problems)
    word = spec.domain_word if domain_word is None else domain_word
    return DatasetIndex(classes, items, word, problems)
