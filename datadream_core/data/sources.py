"""Dataset sources: an ImageFolder tree or one of the paper's benchmarks in the CoOp layout.

A source yields a `DatasetIndex`: the class list (index, display name, folder), every usable image
with its class and split, and the files left out with the reason. Paths use class INDICES later
on, so names may contain "/", spaces or unicode.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from datadream_core.data.images import ImageLimits, inspect_file, is_image_name
from datadream_core.io import LOG

RELEASED_NAMES_FILE = "released_class_names.json"

SPLITS = ("train", "val", "test")
LAYOUT_CLASSES = "class folders (root/<class>/<image>)"
LAYOUT_SPLITS = "split folders (root/{train,val,test}/<class>/<image>)"


class DatasetError(ValueError):
    """The dataset on disk cannot be used; the message names the file, folder or class at fault.

    `problems`: the files left out before the error, for problems.csv.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)


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
        return count_by_split(self.items, len(self.classes))


def count_by_split(items: Iterable[Item], n_classes: int) -> dict[str, np.ndarray]:
    """Split -> images per class index, of index items or splits.csv rows."""
    counts = {split: np.zeros(n_classes, dtype=int) for split in SPLITS}
    for item in items:
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


def name_key(name: str) -> str:
    """A class name as compared: NFC, so that a name typed one way matches a folder stored the other way
    (macOS stores `é` as `e` + a combining accent). Compatibility forms are not folded: NFKC makes `h₂o`
    equal to `h2o`, which CLIP's tokenizer tells apart."""
    return unicodedata.normalize("NFC", name)


def code_points(name: str) -> str:
    """`name` with every character outside printable ASCII written as its code point: caf\\u00e9."""
    return "".join(char if " " <= char <= "~" else f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF
                   else f"\\U{ord(char):08x}" for char in name)


def _shown(name: str) -> str:
    """A name quoted, with its code points where they are not plain ASCII (two spellings of `é` look alike)."""
    spelled = code_points(name)
    return f"'{name}'" + (f" ({spelled})" if spelled != name else "")


def _twins(names: Sequence[str]) -> list[list[str]]:
    """Groups of two or more `names` that are one name after `name_key`."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name_key(name), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def check_distinct_folders(folders: Sequence[str], where: str | Path) -> None:
    """Stop on class folders that differ only in Unicode normalisation: their names look the same and CLIP
    encodes their prompts to the same tokens, so they would be two classes that nothing can tell apart."""
    twins = _twins(folders)
    if twins:
        shown = "; ".join(" and ".join(map(_shown, group)) for group in twins)
        raise DatasetError(f"class folders in {where} differ only in Unicode normalisation (NFC): {shown}. They would"
                           " be classes with the same name and the same prompt; move the images of one folder into"
                           " the other (or rename one) so that each class has one folder")


def display_names(folders: Sequence[str], overrides: Mapping[str, str] | None) -> list[str]:
    """Each folder's class name: its `class_names` entry (matched after `name_key`), else the folder's name."""
    folder_of = {name_key(folder): folder for folder in folders}
    overrides = {folder_of.get(name_key(key), key): value for key, value in dict(overrides or {}).items()}
    unknown = sorted(set(overrides) - set(folders))
    if unknown:
        hints = []
        for key in unknown:
            nearest = difflib.get_close_matches(name_key(key), list(folder_of), n=3, cutoff=0.5)
            found = ", ".join(_shown(folder_of[match]) for match in nearest) or "none close"
            hints.append(f"{_shown(key)} (nearest class folders: {found})")
        raise DatasetError(f"class_names names classes that do not exist: {'; '.join(hints)}")
    names = [overrides.get(folder, folder) for folder in folders]
    seen: dict[str, tuple[str, str]] = {}
    clashes = []
    for folder, name in zip(folders, names):
        first_folder, first_name = seen.setdefault(name_key(name), (folder, name))
        if first_folder != folder:
            spelled = f" ({code_points(first_name)} vs {code_points(name)})" if first_name != name else ""
            clashes.append(f"duplicate class name '{name}' (classes '{first_folder}' and '{folder}'){spelled}")
    if clashes:
        raise DatasetError(f"{'; '.join(clashes)}: names are compared after Unicode NFC normalisation; give the"
                           " classes different names in class_names")
    return names


def _inspect(items: list[Item], workers: int, verify: bool,
             limits: ImageLimits) -> tuple[list[Item], list[str], list[tuple[str, str]]]:
    """Keep the items that decode (when `verify`), with the SHA-256 of each kept file's bytes."""
    paths = [item.path for item in items]
    inspect = partial(inspect_file, verify=verify, limits=limits)
    if workers > 1 and len(paths) > 256:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(inspect, paths, chunksize=64))
    else:
        results = [inspect(path) for path in paths]
    for path, check in zip(paths, results):
        if check.frames > 1:
            LOG.warning("%s is animated (%d frames): only its first frame is used", path, check.frames)
    kept = [(item, check.digest) for item, check in zip(items, results) if check.reason is None]
    problems = [(item.path, check.reason) for item, check in zip(items, results) if check.reason is not None]
    return [item for item, _ in kept], [digest for _, digest in kept], problems


def _drop_duplicates(items: list[Item], digests: list[str],
                     classes: Sequence[ClassInfo]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Keep one copy of each set of byte-identical files.

    Copies in one class keep the copy in the earliest split (train, val, test; then the first path),
    so a test image is never also a training image. Copies under two or more classes have no single
    label: every copy is left out.
    """
    by_digest: dict[str, list[Item]] = {}
    for item, digest in zip(items, digests):
        by_digest.setdefault(digest, []).append(item)
    kept, problems = [], []
    for copies in by_digest.values():
        copies.sort(key=lambda item: (SPLITS.index(item.split), item.path))
        labels = sorted({item.class_index for item in copies})
        if len(labels) > 1:
            names = ", ".join(f"'{classes[label].name}'" for label in labels)
            for item in copies:
                others = ", ".join(other.path for other in copies if other is not item)
                problems.append((item.path, f"same bytes as {others}: one image under classes {names} has no"
                                            " single label; every copy left out"))
            continue
        kept.append(copies[0])
        problems.extend((item.path, f"duplicate of {copies[0].path} (same bytes, {copies[0].split} split):"
                                    f" left out of the {item.split} split") for item in copies[1:])
    return kept, problems


def _screen(items: list[Item], classes: Sequence[ClassInfo], workers: int, verify: bool,
            limits: ImageLimits, problems: list[tuple[str, str]]) -> list[Item]:
    """Leave out unusable files and duplicates (recorded in `problems`); stop, with problems.csv's
    rows in the error, when a class has nothing left."""
    class_of = {item.path: item.class_index for item in items}
    items, digests, unusable = _inspect(items, workers, verify, limits)
    items, duplicates = _drop_duplicates(items, digests, classes)
    problems.extend(unusable + duplicates)
    counts = np.bincount([item.class_index for item in items], minlength=len(classes))
    for info in classes:
        if counts[info.index] == 0:
            own = [(path, reason) for path, reason in problems if class_of.get(path) == info.index]
            shown = "; ".join(f"{path} ({reason})" for path, reason in own[:5])
            more = f"; and {len(own) - 5} more" if len(own) > 5 else ""
            raise DatasetError(
                f"class '{info.name}' (folder '{info.folder}') has no usable images: {shown}{more}"
                f" ({len(problems)} files in the dataset left out, every one listed in problems.csv)",
                problems)
    return items


def split_of(relative_path: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """The split of one image, from its path inside its class folder and the seed alone: adding,
    removing or repairing another file never moves it."""
    digest = hashlib.sha256(f"{seed}\0{relative_path}".encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    return "test" if position < test_fraction else "val" if position < test_fraction + val_fraction else "train"


def _hashed_split(items: list[Item], classes: Sequence[ClassInfo], base: Path, val_fraction: float,
                  test_fraction: float, seed: int) -> list[Item]:
    result = []
    for item in items:
        relative = Path(item.path).relative_to(base / classes[item.class_index].folder).as_posix()
        result.append(Item(item.path, item.class_index, split_of(relative, seed, val_fraction, test_fraction)))
    counts = {split: np.bincount([item.class_index for item in result if item.split == split],
                                 minlength=len(classes)) for split in SPLITS}
    wanted = {"val": val_fraction, "test": test_fraction, "train": 1.0}
    for info in classes:
        empty = [split for split in SPLITS if wanted[split] > 0 and counts[split][info.index] == 0]
        if empty:
            total = sum(int(counts[split][info.index]) for split in SPLITS)
            LOG.warning("class '%s' (folder '%s'): its %d image%s give%s it no %s image (split: val_fraction %g,"
                        " test_fraction %g, seed %d); add images or give the dataset train/ val/ test/ folders",
                        info.name, info.folder, total, "" if total == 1 else "s", "s" if total == 1 else "",
                        " and no ".join(empty), val_fraction, test_fraction, seed)
    return sorted(result, key=lambda it: (it.split, it.class_index, it.path))


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _class_folders(base: Path, problems: list[tuple[str, str]]) -> list[str]:
    """The class folders directly in `base`; symlinks that lead back to the root or repeat another
    class folder are no classes (they would copy other classes' images) and are recorded."""
    real_base = base.resolve()
    folders, real_of = [], {}
    for child in sorted(base.iterdir()):
        if _is_hidden(child.name):
            if child.is_dir() or is_image_name(child):
                problems.append((str(child), "hidden, skipped"))
            continue
        if not child.is_dir():
            if is_image_name(child):
                problems.append((str(child), "image outside any class folder, skipped"))
            continue
        real = child.resolve()
        if real_base.is_relative_to(real):
            problems.append((str(child), f"symlink to {real}, which holds the dataset itself: not a class, skipped"))
        elif real in real_of:
            problems.append((str(child), f"symlink to the class folder '{real_of[real]}': not a class of its own, skipped"))
        else:
            real_of[real] = child.name
            folders.append(child.name)
    return folders


def _files_under(folder: Path, problems: list[tuple[str, str]], root: Path | None = None,
                 other_classes: Sequence[Path] = ()) -> list[Path]:
    """Every visible file under `folder`, following symlinked folders once each. Recorded in
    `problems` and skipped: hidden entries, broken links, and folders reached again (loops), that hold
    the dataset `root` or lie in one of `other_classes` (their images are another class's)."""
    files, seen = [], set()
    real_root = root.resolve() if root is not None else None
    foreign = [other.resolve() for other in other_classes]
    for current, subfolders, names in os.walk(folder, followlinks=True):
        real = Path(os.path.realpath(current))
        reason = (f"symlink to {real}, which is already read: skipped (a loop or a repeat)" if real in seen else
                  f"symlink to {real}, which holds the dataset itself: skipped"
                  if real_root is not None and real_root.is_relative_to(real) else
                  f"symlink to {real}, inside another class's folder: skipped"
                  if any(real.is_relative_to(other) for other in foreign) else None)
        if reason:
            problems.append((current, reason))
            subfolders[:] = []
            continue
        seen.add(real)
        for name in sorted(subfolders):
            if _is_hidden(name):
                problems.append((os.path.join(current, name), "hidden, skipped"))
        subfolders[:] = sorted(name for name in subfolders if not _is_hidden(name))
        for name in sorted(names):
            path = Path(current) / name
            if _is_hidden(name):
                if is_image_name(path):
                    problems.append((str(path), "hidden, skipped"))
            elif not path.exists():
                problems.append((str(path), "broken symlink"))
            else:
                files.append(path)
    return files


def detect_layout(root: Path) -> str:
    """LAYOUT_SPLITS when the root holds only train/ val/ test/ folders and none of them holds images
    directly; LAYOUT_CLASSES when split-named folders hold images (they are classes, then)."""
    folders = [child for child in root.iterdir() if child.is_dir() and not _is_hidden(child.name)]
    if not folders or any(child.name not in SPLITS for child in folders):
        return LAYOUT_CLASSES
    holding_images = sorted(child.name for child in folders
                            if any(entry.is_file() and is_image_name(entry) for entry in child.iterdir()))
    if not holding_images:
        return LAYOUT_SPLITS
    if len(holding_images) == len(folders):
        return LAYOUT_CLASSES
    raise DatasetError(
        f"dataset root {root} holds only {', '.join(sorted(child.name for child in folders))}: cannot tell split"
        f" folders from class folders, because {', '.join(holding_images)} hold images directly and the others"
        " do not. Either put every class in its own folder under each split folder, or rename the classes")


def split_roots(root: Path) -> dict[str, Path]:
    """Split name ("" without split folders) -> the folder holding that split's class folders."""
    if detect_layout(root) == LAYOUT_SPLITS:
        return {name: root / name for name in SPLITS if (root / name).is_dir()}
    return {"": root}


def class_folders_by_split(root: Path, problems: list[tuple[str, str]] | None = None) -> dict[str, list[str]]:
    """Split name ("" without split folders) -> the class folders of that split."""
    problems = [] if problems is None else problems
    return {split_name: _class_folders(base, problems) for split_name, base in split_roots(root).items()}


def list_class_folders(root: Path, problems: list[tuple[str, str]] | None = None) -> list[str]:
    """The class folder names of an ImageFolder root, in either layout, sorted; a DatasetError when two of
    them are one name (`check_distinct_folders`)."""
    folders = sorted({folder for folders in class_folders_by_split(root, problems).values() for folder in folders})
    check_distinct_folders(folders, root)
    return folders


def read_imagefolder(
    root: str | Path,
    class_names: Mapping[str, str] | None = None,
    split: Mapping[str, float] | None = None,
    domain_word: str = "",
    verify: bool = True,
    workers: int = 1,
    limits: ImageLimits = ImageLimits(),
) -> DatasetIndex:
    """`root/<class>/<image>`, or `root/{train,val,test}/<class>/<image>` (see `detect_layout`)."""
    root = Path(root)
    _require_dir(root, "dataset root")
    layout = detect_layout(root)
    LOG.info("dataset root %s: layout detected: %s", root, layout)
    problems: list[tuple[str, str]] = []
    bases = split_roots(root)
    folders_by_split = class_folders_by_split(root, problems)
    folders = sorted({folder for split_folders in folders_by_split.values() for folder in split_folders})
    check_distinct_folders(folders, root)
    if not folders:
        raise DatasetError(f"dataset root {root} holds no class folders (layout detected: {layout})", problems)
    names = display_names(folders, class_names)
    classes = [ClassInfo(index, name, folder) for index, (name, folder) in enumerate(zip(names, folders))]
    items = []
    for split_name, base in bases.items():
        for info in classes:
            if info.folder in folders_by_split[split_name]:
                others = [base / folder for folder in folders_by_split[split_name] if folder != info.folder]
                items.extend(Item(str(path), info.index, split_name or "train")
                             for path in _files_under(base / info.folder, problems, root, others))
    for info in classes:
        if not any(item.class_index == info.index for item in items):
            raise DatasetError(f"class folder '{info.folder}' in {root} is empty", problems)
    items = _screen(items, classes, workers, verify, limits, problems)
    if layout == LAYOUT_CLASSES:
        split = dict(split or {})
        items = _hashed_split(items, classes, root, split.get("val_fraction", 0.1), split.get("test_fraction", 0.2),
                              split.get("seed", 0))
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


def _inside(relative: str, where: str) -> PurePosixPath:
    """`relative` as a path that stays inside the folder it is relative to, or a DatasetError."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts or "\\" in relative:
        raise DatasetError(f"{where}: image path {relative!r} must be relative and stay inside the dataset"
                           " folder (no leading '/', no '..')")
    return path


def _read_zhou_split(base: Path, spec: CoopSpec, problems: list) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    split_file = base / spec.split_file
    _require_file(split_file, "split file")
    try:
        data = json.loads(split_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {split_file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"split file {split_file} holds a JSON {type(data).__name__}, not an object with"
                           f" {', '.join(SPLITS)} lists")
    image_root = base / spec.image_dir
    names: dict[int, str] = {}
    listed = []
    for split_name in SPLITS:
        entries = data.get(split_name, [])
        if not isinstance(entries, list):
            raise DatasetError(f"split file {split_file}: '{split_name}' is a {type(entries).__name__}, not a list")
        for position, entry in enumerate(entries):
            where = f"split file {split_file}, '{split_name}' entry {position} ({entry!r})"
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                    and isinstance(entry[2], str)):
                raise DatasetError(f"{where}: not [relative image path, class label >= 0, class name]")
            relative, label, name = entry
            if names.setdefault(label, name) != name:
                raise DatasetError(f"{where}: label {label} is also named '{names[label]}'")
            listed.append((image_root / _inside(relative, where), label, split_name))
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"split file {split_file}: labels are not 0..{len(names) - 1}")
    return [names[label] for label in range(len(names))], listed, split_file


def _two_fields(line: str, number: int, listing: Path, what: str) -> tuple[str, str]:
    first, _, rest = line.strip().partition(" ")
    if not rest.strip():
        raise DatasetError(f"{listing}, line {number}: {line.strip()!r} is not '{what}'")
    return first, rest.strip()


def _read_aircraft(base: Path, spec: CoopSpec, problems: list) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    variants_file = base / spec.split_file
    _require_file(variants_file, "split file")
    variants = [line.strip() for line in variants_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    label_of = {name: index for index, name in enumerate(variants)}
    listed = []
    for split_name in SPLITS:
        list_file = base / f"images_variant_{split_name}.txt"
        _require_file(list_file, "split file")
        for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            image_id, variant = _two_fields(line, number, list_file, "<image id> <variant>")
            if variant not in label_of:
                raise DatasetError(f"split file {list_file}, line {number}: variant '{variant}' is missing from"
                                   f" {variants_file}")
            where = f"split file {list_file}, line {number}"
            if len(_inside(image_id, where).parts) != 1:
                raise DatasetError(f"{where}: image id {image_id!r} is not a plain file name")
            listed.append((base / spec.image_dir / f"{image_id}.jpg", label_of[variant], split_name))
    return variants, listed, base / "images_variant_*.txt"


def _read_imagenet(base: Path, spec: CoopSpec, problems: list) -> tuple[list[str], list[tuple[Path, int, str]], Path]:
    names_file = base / spec.split_file
    _require_file(names_file, "class-name file")
    wnids, names = [], []
    for number, line in enumerate(names_file.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            wnid, name = _two_fields(line, number, names_file, "<wnid> <class name>")
            if len(_inside(wnid, f"{names_file}, line {number}").parts) != 1:
                raise DatasetError(f"{names_file}, line {number}: wnid {wnid!r} is not a plain folder name")
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
            listed.extend((path, label, split_name) for path in _files_under(class_dir, problems))
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
    limits: ImageLimits = ImageLimits(),
    first_classes: int | None = None,
) -> DatasetIndex:
    """One of the paper's 10 benchmarks, with CoOp's splits and the paper's domain word.

    `class_names`: a map from CoOp name to display name, or "released" for the released code's names.
    `first_classes`: keep only the classes labelled below it (None: all).
    """
    if coop_name not in COOP_SPECS:
        raise DatasetError(f"unknown CoOp dataset '{coop_name}' (known: {', '.join(sorted(COOP_SPECS))})")
    spec = COOP_SPECS[coop_name]
    base = Path(root) / spec.folder
    _require_dir(Path(root), "dataset root")
    _require_dir(base, f"{coop_name} folder")
    problems: list[tuple[str, str]] = []
    raw_names, listed, listing_file = COOP_READERS.get(coop_name, _read_zhou_split)(base, spec, problems)
    if expected_classes is not None and len(raw_names) != expected_classes:
        # The workflow plans one job per class before reading the data, from the benchmark's known size.
        raise DatasetError(f"{listing_file} lists {len(raw_names)} classes; {coop_name} has {expected_classes}")
    if first_classes is not None:
        raw_names, listed = raw_names[:first_classes], [entry for entry in listed if entry[1] < first_classes]
    if class_names == "released":
        names = released_class_names(coop_name)[:len(raw_names)]
        check_released_order(coop_name, names, raw_names, _label_folders(listed, base / spec.image_dir, len(raw_names)),
                             listing_file)
        names = display_names(names, None)
    else:
        names = display_names(raw_names, class_names)
    classes = [ClassInfo(index, name, raw) for index, (name, raw) in enumerate(zip(names, raw_names))]
    items = _screen(_check_listed_images(listed, listing_file), classes, workers, verify, limits, problems)
    word = spec.domain_word if domain_word is None else domain_word
    return DatasetIndex(classes, items, word, problems)
