from pathlib import Path

import pytest

from coop_layout import aircraft_tree, imagenet_tree, write_image, zhou_tree
from datadream_core.data.sources import COOP_SPECS, DatasetError, read_coop, read_imagefolder, split_of


def _imagefolder(root: Path, classes=("cat", "dog"), per_class=6, splits=False) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            if splits:
                for split in ("train", "val", "test"):
                    write_image(root / split / name / f"{i}.png", i)
            else:
                write_image(root / name / f"{i}.png", i)
    return root


def test_imagefolder_split_is_seeded_and_per_image(tmp_path):
    root = _imagefolder(tmp_path / "data", per_class=40)
    fractions = {"val_fraction": 0.2, "test_fraction": 0.3}
    first = read_imagefolder(root, split={**fractions, "seed": 1})
    again = read_imagefolder(root, split={**fractions, "seed": 1})
    other = read_imagefolder(root, split={**fractions, "seed": 2})
    assert [c.name for c in first.classes] == ["cat", "dog"]
    assert first.items == again.items
    assert first.items != other.items
    for item in first.items:  # each image's split is a function of its path in its class folder and the seed
        assert item.split == split_of(Path(item.path).name, 1, 0.2, 0.3)
    counts = first.split_counts()
    assert counts["train"].sum() + counts["val"].sum() + counts["test"].sum() == 80
    assert all(counts[split].min() >= 3 for split in ("train", "val", "test"))


def test_imagefolder_with_split_folders(tmp_path):
    index = read_imagefolder(_imagefolder(tmp_path / "data", per_class=2, splits=True))
    counts = index.split_counts()
    assert counts["train"].tolist() == [2, 2] and counts["val"].tolist() == [2, 2] and counts["test"].tolist() == [2, 2]


def test_bad_files_go_to_problems(tmp_path):
    root = _imagefolder(tmp_path / "data", per_class=4)
    (root / "cat" / "readme.txt").write_text("hello")
    whole = (root / "dog" / "0.png").read_bytes()
    (root / "dog" / "broken.png").write_bytes(whole[: len(whole) - 30])
    (root / "dog" / ".hidden.png").write_bytes(b"junk")
    index = read_imagefolder(root)
    reasons = dict((Path(path).name, reason) for path, reason in index.problems)
    assert reasons.keys() == {"readme.txt", "broken.png", ".hidden.png"}
    assert reasons[".hidden.png"] == "hidden, skipped"
    assert reasons["readme.txt"] == "not an image file"
    assert reasons["broken.png"].startswith("unreadable or truncated image")
    assert len(index.items) == 8


def test_names_with_slash_space_and_unicode(tmp_path):
    root = _imagefolder(tmp_path / "data", classes=("f16", "große katze", "ram van"))
    index = read_imagefolder(root, class_names={"f16": "F-16A/B", "ram van": "Ram C/V Cargo Van"})
    assert [c.name for c in index.classes] == ["F-16A/B", "große katze", "Ram C/V Cargo Van"]


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "dataset root not found"),
    (lambda root: (_imagefolder(root), (root / "empty").mkdir()), "class folder 'empty' in"),
    (lambda root: (_imagefolder(root), write_image(root / "bad" / "x.png").write_bytes(b"nope")),
     "class 'bad' (folder 'bad') has no usable images"),
])
def test_named_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError) as error:
        read_imagefolder(root)
    assert message in str(error.value)


def test_duplicate_class_names_are_an_error(tmp_path):
    root = _imagefolder(tmp_path / "data")
    with pytest.raises(DatasetError, match="duplicate class name 'pet' \\(classes 'cat' and 'dog'\\)"):
        read_imagefolder(root, class_names={"cat": "pet", "dog": "pet"})


# --- the paper's benchmarks in CoOp's layout -------------------------------------------------------

ZHOU = [name for name in COOP_SPECS if name not in ("imagenet", "fgvc_aircraft")]


@pytest.mark.parametrize("coop_name", ZHOU)
def test_coop_zhou_readers_use_the_real_test_split(tmp_path, coop_name):
    index = read_coop(zhou_tree(tmp_path, coop_name), coop_name)
    counts = index.split_counts()
    assert len(index.classes) == 3
    assert counts["train"].tolist() == [3, 3, 3] and counts["val"].tolist() == [1, 1, 1]
    assert counts["test"].tolist() == [2, 2, 2]
    test_files = {Path(item.path).name for item in index.items if item.split == "test"}
    assert test_files == {"test_0.jpg", "test_1.jpg"}  # never the train split (released-code bug)
    assert index.domain_word == COOP_SPECS[coop_name].domain_word


def test_coop_domain_words_are_the_papers():
    words = {name: spec.domain_word for name, spec in COOP_SPECS.items()}
    assert words == {"imagenet": "", "caltech101": "", "dtd": "texture ", "eurosat": "satellite ",
                     "fgvc_aircraft": "aircraft ", "food101": "food ", "flowers102": "flower ", "pets": "pet ",
                     "cars": "car ", "sun397": "scene "}


def test_coop_aircraft_variants_with_slashes(tmp_path):
    index = read_coop(aircraft_tree(tmp_path), "fgvc_aircraft")
    assert [c.name for c in index.classes] == ["707-320", "F-16A/B", "F/A-18"]
    assert index.split_counts()["test"].tolist() == [2, 2, 2]


def test_coop_imagenet_val_is_the_test_split(tmp_path):
    index = read_coop(imagenet_tree(tmp_path), "imagenet")
    counts = index.split_counts()
    assert [c.name for c in index.classes] == ["tench", "goldfish", "great white shark"]
    assert counts["train"].tolist() == [3, 3, 3] and counts["test"].tolist() == [2, 2, 2]
    assert counts["val"].sum() == 0


def test_coop_missing_split_file(tmp_path):
    (tmp_path / "eurosat" / "2750").mkdir(parents=True)
    with pytest.raises(DatasetError, match="split file not found: .*split_zhou_EuroSAT.json"):
        read_coop(tmp_path, "eurosat")


def test_coop_split_naming_a_missing_image(tmp_path):
    root = zhou_tree(tmp_path, "dtd")
    missing = root / "dtd" / "images" / "class_1" / "test_0.jpg"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"names 1 missing image\(s\): .*class_1/test_0.jpg \(test\)"):
        read_coop(root, "dtd")


def test_coop_duplicate_names_are_an_error(tmp_path):
    root = zhou_tree(tmp_path, "pets")
    with pytest.raises(DatasetError, match="duplicate class name"):
        read_coop(root, "pets", class_names={"name 0": "cat", "name 1": "cat"})
