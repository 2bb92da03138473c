"""Issue 19: bad input and faults that used to slip through. One test per numbered case, on files
fabricated under tmp_path; each checks the message or the problems.csv row, and that nothing else moved."""

import json
import logging
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datadream_core.config import ConfigError, DatasetSpec, validate_config
from datadream_core.data.build import class_count, index_and_write
from datadream_core.data.images import ImageLimits, load_rgb
from datadream_core.data.sources import (LAYOUT_CLASSES, LAYOUT_SPLITS, DatasetError, read_coop, read_imagefolder,
                                         split_of)
from datadream_core.io import atomic_folder, clean_stale_temporaries, read_csv
from datadream_core.jobs import NON_RETRYABLE_EXIT_CODE

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    """Noise seeded by the last path parts: images at different places differ in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32("/".join(path.parts[-3:]).encode("utf-8")))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _classes(root: Path, names=("cat", "dog"), per_class: int = 6) -> Path:
    for name in names:
        for i in range(per_class):
            _image(root / name / f"{i}.png")
    return root


def _by_class(index) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {info.name: set() for info in index.classes}
    for item in index.items:
        found[index.classes[item.class_index].name].add(item.path)
    return found


def _problems(index) -> dict[str, str]:
    return dict(index.problems)


# --- data ---------------------------------------------------------------------------------------

def test_01_symlink_loops_are_recorded_and_symlinked_folders_are_read(tmp_path):
    root = _classes(tmp_path / "data")
    plain = _by_class(read_imagefolder(root))
    outside = tmp_path / "elsewhere"
    for i in range(2):
        _image(outside / f"extra{i}.png")
    (root / "loop").symlink_to(".")
    (root / "cat" / "more").symlink_to(outside)
    (root / "cat" / "back").symlink_to(root)
    (root / "cat" / "dogs").symlink_to(root / "dog")
    index = read_imagefolder(root)
    assert [info.name for info in index.classes] == ["cat", "dog"]
    found = _by_class(index)
    assert found["dog"] == plain["dog"]
    assert found["cat"] == plain["cat"] | {str(root / "cat" / "more" / f"extra{i}.png") for i in range(2)}
    problems = _problems(index)
    assert problems[str(root / "loop")].startswith("symlink to") and "holds the dataset itself" in problems[str(root / "loop")]
    assert "holds the dataset itself" in problems[str(root / "cat" / "back")]
    assert "inside another class's folder" in problems[str(root / "cat" / "dogs")]
    assert len(problems) == 3
    assert class_count(DatasetSpec("d", "imagefolder", root=str(root))) == 2


def test_02_layout_is_decided_from_the_whole_tree(tmp_path, caplog):
    classes_named_like_splits = _classes(tmp_path / "a", names=("cat", "test", "train"))
    with caplog.at_level(logging.INFO, logger="datadream"):
        index = read_imagefolder(classes_named_like_splits)
    assert [info.name for info in index.classes] == ["cat", "test", "train"]
    assert sum(index.split_counts()[split].sum() for split in ("train", "val", "test")) == 18
    assert f"layout detected: {LAYOUT_CLASSES}" in caplog.text
    only_split_named_classes = _classes(tmp_path / "b", names=("train", "val"))
    assert [info.name for info in read_imagefolder(only_split_named_classes).classes] == ["train", "val"]
    splits = tmp_path / "c"
    for split in ("train", "test"):
        _classes(splits / split, names=("cat", "dog"), per_class=2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="datadream"):
        assert [info.name for info in read_imagefolder(splits).classes] == ["cat", "dog"]
    assert f"layout detected: {LAYOUT_SPLITS}" in caplog.text
    mixed = tmp_path / "d"
    _classes(mixed / "train", names=("cat",), per_class=2)
    _image(mixed / "test" / "loose.png")
    with pytest.raises(DatasetError, match=r"holds only test, train: cannot tell split folders from class folders,"
                                           r" because test hold images directly"):
        read_imagefolder(mixed)


def test_03_duplicates_stay_in_one_split_and_cross_class_copies_are_left_out(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        _classes(root / split, per_class=3)
    leaked = root / "test" / "cat" / "leaked.png"
    leaked.write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    twin = root / "val" / "cat" / "1_again.png"
    twin.write_bytes((root / "val" / "cat" / "1.png").read_bytes())
    ambiguous = [root / "train" / "cat" / "both.png", root / "test" / "dog" / "both.png"]
    for path in ambiguous:
        path.write_bytes((root / "train" / "dog" / "2.png").read_bytes())
    index = read_imagefolder(root)
    problems = _problems(index)
    assert problems[str(leaked)] == (f"duplicate of {root / 'train' / 'cat' / '0.png'} (same bytes, train split):"
                                     " left out of the test split")
    assert problems[str(twin)].startswith(f"duplicate of {root / 'val' / 'cat' / '1.png'} (same bytes, val split)")
    for path in ambiguous + [root / "train" / "dog" / "2.png"]:
        assert "one image under classes 'cat', 'dog' has no single label" in problems[str(path)]
    assert len(problems) == 5
    counts = index.split_counts()
    assert counts["train"].tolist() == [3, 2] and counts["val"].tolist() == [3, 3] and counts["test"].tolist() == [3, 3]


def test_04_problems_csv_is_written_before_a_class_without_usable_images_stops_the_run(tmp_path):
    root = _classes(tmp_path / "data")
    (root / "bird").mkdir()
    (root / "bird" / "a.png").write_bytes(b"not a png")
    (root / "bird" / "b.txt").write_text("notes")
    out = tmp_path / "results"
    spec = DatasetSpec("d", "imagefolder", root=str(root))
    with pytest.raises(DatasetError) as error:
        index_and_write(spec, "a photo of a {name}", out / "classes.csv", out / "splits.csv", out / "problems.csv")
    message = str(error.value)
    assert message.startswith("class 'bird' (folder 'bird') has no usable images: ")
    assert f"{root / 'bird' / 'a.png'} (not an image file)" in message and str(root / "bird" / "b.txt") in message
    assert [row["path"] for row in read_csv(out / "problems.csv")] == [str(root / "bird" / "a.png"),
                                                                       str(root / "bird" / "b.txt")]
    assert sorted(path.name for path in out.iterdir()) == ["problems.csv"]


def test_05_sixteen_bit_png_keeps_its_range_when_dark(tmp_path):
    dark = np.full((4, 4), 200, dtype=np.uint16)
    dark[0, 0] = 65535
    path = tmp_path / "dark16.png"
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(load_rgb(path))[1, 1].tolist() == [1, 1, 1]  # 200 / 65535 of white, not 200 / 255
    Image.fromarray(dark).save(tmp_path / "with_white.png")
    pixels = np.asarray(load_rgb(tmp_path / "with_white.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[1, 1].tolist() == [1, 1, 1]


def test_06_hidden_and_oversized_images_are_recorded(tmp_path):
    root = _classes(tmp_path / "data")
    hidden = _image(root / "cat" / ".hidden.png")
    _image(root / "dog" / ".thumbs" / "x.png")
    huge = _image(root / "dog" / "huge.png", size=(1500, 1000))
    index = read_imagefolder(root, limits=ImageLimits(max_megapixels=1.0))
    problems = _problems(index)
    assert problems == {
        str(hidden): "hidden, skipped",
        str(root / "dog" / ".thumbs"): "hidden, skipped",
        str(huge): "image is 1.5 megapixels (1500x1000), above the limit of 1 (data.max_megapixels):"
                   " downscale it or raise the limit",
    }
    assert len(index.items) == 12
    assert str(huge) in {item.path for item in read_imagefolder(root).items}  # within the default limit


def test_07_small_classes_are_warned_about_by_name(tmp_path, caplog):
    root = _classes(tmp_path / "data", per_class=30)
    names = [f"{i}.png" for i in range(100) if split_of(f"{i}.png", 0, 0.1, 0.2) == "train"][:2]
    for name in names:
        _image(root / "tiny" / name)
    with caplog.at_level(logging.WARNING, logger="datadream"):
        index = read_imagefolder(root)
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["class 'tiny' (folder 'tiny'): its 2 images give it no val and no test image (split:"
                        " val_fraction 0.1, test_fraction 0.2, seed 0); add images or give the dataset train/"
                        " val/ test/ folders"]
    assert index.split_counts()["train"][2] == 2


def _zhou(root: Path, entries: object) -> Path:
    base = root / "dtd"
    for label in range(2):
        for i in range(2):
            _image(base / "images" / f"c{label}" / f"{i}.jpg")
    (base / "split_zhou_DescribableTextures.json").write_text(json.dumps(entries))
    return root


GOOD = [["c0/0.jpg", 0, "a"], ["c1/0.jpg", 1, "b"]]


@pytest.mark.parametrize("entries, message", [
    ([GOOD], r"holds a JSON list, not an object with train, val, test lists"),
    ({"train": {"c0/0.jpg": 0}}, r"'train' is a dict, not a list"),
    ({"train": GOOD + [["c0/1.jpg", "0", "a"]]},
     r"'train' entry 2 \(\['c0/1.jpg', '0', 'a'\]\): not \[relative image path, class label >= 0, class name\]"),
    ({"train": GOOD + [["c0/1.jpg", 0]]}, r"'train' entry 2 \(\['c0/1.jpg', 0\]\): not \[relative image path"),
    ({"train": GOOD, "test": [["../../secret.jpg", 0, "a"]]},
     r"'test' entry 0 .*: image path '../../secret.jpg' must be relative and stay inside the dataset folder"),
    ({"train": GOOD + [["/etc/passwd", 1, "b"]]}, r"'train' entry 2 .*: image path '/etc/passwd' must be relative"),
    ({"train": GOOD + [["c0/1.jpg", 1, "a"]]}, r"'train' entry 2 .*: label 1 is also named 'b'"),
])
def test_08_malformed_coop_split_files_name_the_entry_and_the_file(tmp_path, entries, message):
    root = _zhou(tmp_path, entries)
    with pytest.raises(DatasetError, match=message) as error:
        read_coop(root, "dtd")
    assert str(error.value).startswith(f"split file {root / 'dtd' / 'split_zhou_DescribableTextures.json'}")


def test_09_adding_or_repairing_a_file_moves_no_other_image(tmp_path):
    root = _classes(tmp_path / "data", per_class=40)
    broken = root / "cat" / "broken.png"
    broken.write_bytes(b"truncated")
    before = {item.path: item.split for item in read_imagefolder(root).items}
    _image(root / "cat" / "new.png")
    _image(broken)  # repaired
    after = {item.path: item.split for item in read_imagefolder(root).items}
    assert after.keys() == before.keys() | {str(root / "cat" / "new.png"), str(broken)}
    assert {path: after[path] for path in before} == before


# --- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    ({"dream": {"epochs": 60.0}}, "config key 'dream.epochs': 60.0 is not of type 'integer'"),
    ({"prompt_template": "a {label}"}, "config key 'prompt_template': {label} in 'a {label}' is not allowed;"
                                       " the allowed fields are {domain}, {name}, written exactly so"),
    ({"prompt_template": "a {name.__class__}"}, "{name.__class__} in 'a {name.__class__}' is not allowed"),
    ({"prompt_template": "a {name!r}"}, "{name!r} in 'a {name!r}' is not allowed"),
    ({"prompt_template": "a photo of a {domain}"}, "has no {name}, so every class would get the same prompt"),
    ({"prompt_template": "a {name"}, "'a {name' is not a valid template"),
])
def test_10_config_types_and_prompt_template_are_checked_up_front(extra, message):
    with pytest.raises(ConfigError) as error:
        validate_config({"datasets": {"d": {"source": "miniworld"}}, **extra})
    assert message in str(error.value)
    valid = validate_config({"datasets": {"d": {"source": "miniworld"}}, "prompt_template": "{{a}} {domain}{name}"})
    assert valid["dream"]["epochs"] == 200


# --- faults -------------------------------------------------------------------------------------

class _RunsCode:
    """Unpickling this object writes a file: what a planted checkpoint could do at resume."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    from datadream_core.data.miniworld import render_world
    from datadream_core.dream import Example

    rows = render_world(tmp_path_factory.mktemp("world"), "target", 32, {"train": 2}, seed=0, num_classes=2)
    return [Example(path, f"a photo of a {['blicket', 'dax'][c]}") for path, c, _ in rows]


def _train(tiny_sd, shots, out: Path) -> dict:
    from safetensors.torch import load_file

    from datadream_core.dream import LORA_FILE, DreamSettings, train_datadream

    train_datadream(tiny_sd, shots, out, DreamSettings(rank=2, alpha=2, batch_size=2, epochs=2, warmup_steps=1,
                                                        learning_rate=1e-3, checkpoint_every=1), seed=0)
    return load_file(out / LORA_FILE)


def test_12_checkpoints_and_fid_weights_load_tensors_only(tmp_path, caplog):
    from datadream_core.checkpoint import load_checkpoint
    from datadream_core.metrics.fid import inception_extractor

    marker = tmp_path / "code_ran"
    planted = {"fingerprint": _RunsCode(marker), "step": 1, "params": [], "optimizer": {}, "schedule": {},
               "scaler": None, "losses": []}
    torch.save(planted, tmp_path / "checkpoint.pt")
    with caplog.at_level(logging.WARNING, logger="datadream"):
        assert load_checkpoint(tmp_path / "checkpoint.pt", "x", None, None, "step", "losses") is None
    assert not marker.exists()
    assert (tmp_path / "checkpoint.pt.corrupt").is_file() and not (tmp_path / "checkpoint.pt").exists()
    assert caplog.text.count("does not load (UnpicklingError") == 1
    torch.save({"weights": _RunsCode(marker)}, tmp_path / "inception.pth")
    with pytest.raises(Exception, match="Weights only load failed"):
        inception_extractor(str(tmp_path / "inception.pth"), device="cpu")
    assert not marker.exists()


def test_13_fsync_before_rename_and_a_torn_checkpoint_is_set_aside(tiny_sd, shots, tmp_path, monkeypatch, caplog):
    from datadream_core.io import write_text

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    write_text(tmp_path / "out" / "file.txt", "done")
    assert len(synced) == 2 and Path(synced[0]).name.startswith(".file.txt.") and synced[1] == str(tmp_path / "out")
    monkeypatch.setattr(os, "fsync", real_fsync)

    clean = _train(tiny_sd, shots, tmp_path / "clean")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "checkpoint.pt").write_bytes(b"PK\x03\x04" + bytes(100))  # a zip header, then nothing: torn
    with caplog.at_level(logging.WARNING, logger="datadream"):
        resumed = _train(tiny_sd, shots, torn)
    assert f"checkpoint {torn / 'checkpoint.pt'} does not load" in caplog.text
    assert (torn / "checkpoint.pt.corrupt").read_bytes() == b"PK\x03\x04" + bytes(100)
    assert resumed.keys() == clean.keys() and all(torch.equal(resumed[key], clean[key]) for key in clean)


START_JOB = textwrap.dedent("""
    import sys
    from pathlib import Path
    from datadream_core.data.sources import DatasetError
    from datadream_core.jobs import start_job
    log, attempt, outputs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    start_job(log, 1, outputs=outputs or None, attempt=attempt)
    with open(Path(log).with_name("body_runs"), "a") as runs:
        runs.write("ran\\n")
    raise DatasetError("class 'bird' has no usable images")
""")


def _start_job(tmp_path: Path, attempt: int, *outputs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", START_JOB, str(tmp_path / "job.log"), str(attempt), *map(str, outputs)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_14_stale_temporaries_are_cleaned_and_a_folder_swap_keeps_a_version(tmp_path):
    shared = tmp_path / "results"
    owned = shared / "c0001"
    (owned / ".lora.abc").mkdir(parents=True)
    (owned / "sub").mkdir()
    stale = [owned / ".lora.abc", owned / "sub" / ".checkpoint.pt.x1.tmp", shared / ".metrics.csv.x2.tmp",
             shared / ".c0001.x3.tmp"]
    for path in stale[1:]:
        path.write_text("half")
    keep = [shared / ".other.csv.x4.tmp", owned / "sub" / "image.png", shared / "metrics.csv.x5.tmp"]
    for path in keep:
        path.write_text("someone else's")
    result = _start_job(tmp_path, 1, shared / "metrics.csv", owned)
    assert result.returncode == NON_RETRYABLE_EXIT_CODE
    assert not any(path.exists() for path in stale) and all(path.exists() for path in keep)
    assert (tmp_path / "job.log").read_text().count("left behind by a killed earlier run") == 4

    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "v1").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "v2").write_text("2")
            raise RuntimeError("killed while writing")
    assert sorted(path.name for path in target.iterdir()) == ["v1"]
    # a kill between the two renames: the old version is aside, the new one not yet in place
    aside = tmp_path / ".model.k.aside"
    os.replace(target, aside)
    assert clean_stale_temporaries([target]) == []
    assert sorted(path.name for path in target.iterdir()) == ["v1"] and not aside.exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".model")) == []


def test_15_non_retryable_errors_exit_with_their_code_and_later_attempts_stop_at_once(tmp_path):
    first = _start_job(tmp_path, 1)
    assert first.returncode == NON_RETRYABLE_EXIT_CODE
    assert "DatasetError: class 'bird' has no usable images" in (tmp_path / "job.log.nonretryable").read_text()
    second = _start_job(tmp_path, 2)
    assert second.returncode == NON_RETRYABLE_EXIT_CODE
    assert ("attempt 2 not run: an earlier attempt failed with an error that no retry can fix: DatasetError: class"
            " 'bird' has no usable images") in (tmp_path / "job.log").read_text()
    assert (tmp_path / "body_runs").read_text() == "ran\n"
    again = _start_job(tmp_path, 1)  # a new run (the user fixed the data) starts afresh
    assert again.returncode == NON_RETRYABLE_EXIT_CODE and (tmp_path / "body_runs").read_text() == "ran\nran\n"


@pytest.mark.e2e
def test_15_snakemake_retries_of_a_non_retryable_failure_do_not_rerun_the_job(tmp_path):
    (tmp_path / "job.py").write_text(textwrap.dedent("""
        from datadream_core.data.sources import DatasetError
        from datadream_core.jobs import start_job
        start_job(snakemake.log[0], snakemake.threads, attempt=snakemake.resources.get("attempt", 1))
        with open("body_runs", "a") as runs:
            runs.write(f"attempt {snakemake.resources.attempt}\\n")
        raise DatasetError("class 'bird' has no usable images")
    """))
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        rule fails:
            output: "out.txt"
            log: "logs/fails.log"
            script: "job.py"
    """))
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert slurm["default-resources"]["attempt"] == "attempt" and slurm["retries"] == 2
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--retries", "2",
                             "--default-resources", "attempt=attempt", "--quiet", "rules"],
                            cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode != 0 and result.stderr.count("Trying to restart job") == 2
    assert (tmp_path / "body_runs").read_text() == "attempt 1\n"
    assert "attempt 3 not run: an earlier attempt failed" in (tmp_path / "logs" / "fails.log").read_text()


# --- report -------------------------------------------------------------------------------------

def test_16_class_names_are_plain_text_and_missing_glyphs_are_named(tmp_path, caplog):
    from datadream_core.data.table import ClassRow
    from datadream_core.report.grids import sample_grid

    names = ["$\\frac{$", "cost $5 or $6", "猫", "private \ue000 glyph"]
    classes = [ClassRow(i, name, name, f"a photo of a {name}") for i, name in enumerate(names)]
    real = {i: [str(_image(tmp_path / f"{i}.png"))] for i in range(len(names))}
    with caplog.at_level(logging.WARNING, logger="datadream"):
        sample_grid(classes, real, {}, tmp_path / "grid.png", "names $x$", images_per_block=1)
    assert Image.open(tmp_path / "grid.png").size[0] > 100
    assert ("class 'private \ue000 glyph' (index 3): no installed font draws '\ue000' (U+E000); the grid shows"
            " empty boxes there") in caplog.text
    assert "'$\\frac{$'" not in caplog.text and "cost $5" not in caplog.text


# --- round 3: names that look alike, splits too small for the config, tiny and animated images -------

CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"


def test_17_folders_differing_only_in_unicode_normalisation_stop_before_any_job(tmp_path):
    root = _classes(tmp_path / "data", names=(CAFE_NFC, CAFE_NFD, "tea"))
    if len(list(root.iterdir())) < 3:
        pytest.skip("this file system normalises names itself")
    message = (f"differ only in Unicode normalisation (NFC): '{CAFE_NFD}' (cafe\\u0301) and '{CAFE_NFC}' (caf\\u00e9)."
               " They would be classes with the same name and the same prompt; move the images of one folder into"
               " the other (or rename one)")
    for stop in (lambda: class_count(DatasetSpec("d", "imagefolder", root=str(root))), lambda: read_imagefolder(root)):
        with pytest.raises(DatasetError) as error:
            stop()
        assert f"class folders in {root} " in str(error.value) and message in str(error.value)
    renamed = {"tea": CAFE_NFD}  # a class_names entry that makes two names one is stopped the same way
    only_nfc = _classes(tmp_path / "one", names=(CAFE_NFC, "tea"))
    with pytest.raises(DatasetError) as error:
        read_imagefolder(only_nfc, class_names=renamed)
    assert str(error.value).startswith(f"duplicate class name '{CAFE_NFD}' (classes '{CAFE_NFC}' and 'tea') (caf\\u00e9"
                                       " vs cafe\\u0301): names are compared after Unicode NFC normalisation")


def test_18_class_names_match_folders_after_nfc_and_name_the_nearest_folders(tmp_path):
    root = _classes(tmp_path / "data", names=(CAFE_NFD, "cat", "dog"))
    index = read_imagefolder(root, class_names={CAFE_NFC: "coffee", "dog": "hound"})
    assert [(info.folder, info.name) for info in index.classes] == [(CAFE_NFD, "coffee"), ("cat", "cat"),
                                                                   ("dog", "hound")]
    spec = DatasetSpec("d", "imagefolder", root=str(root), class_names={"cafe": "coffee", "dgo": "hound"})
    with pytest.raises(DatasetError) as error:
        class_count(spec)  # at DAG parsing, before any job
    assert str(error.value) == ("dataset 'd': class_names names classes that do not exist: 'cafe' (nearest class"
                                f" folders: '{CAFE_NFD}' (cafe\\u0301), 'cat'); 'dgo' (nearest class folders: 'dog')")


def _split_dataset(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    for split, per_class in counts.items():
        for name, count in per_class.items():
            for i in range(count):
                _image(root / split / name / f"{i}.png")
    return root


def _needs(**config) -> tuple:
    from datadream_core.data.fewshot import split_needs

    return split_needs(validate_config({"datasets": {"d": {"source": "miniworld"}}, **config}), "d")


def test_19_splits_too_small_for_the_config_stop_the_index_listing_every_short_class(tmp_path):
    root = _split_dataset(tmp_path / "data", {"train": {"cat": 2, "dog": 1, "owl": 2},
                                              "val": {"cat": 2, "dog": 1, "owl": 1},
                                              "test": {"cat": 1, "dog": 1}})
    spec = DatasetSpec("d", "imagefolder", root=str(root))
    out = tmp_path / "results"
    needs = _needs(shots=[1, 2], classify={"selection": "val"})
    with pytest.raises(DatasetError) as error:
        index_and_write(spec, "a photo of a {name}", out / "classes.csv", out / "splits.csv", out / "problems.csv",
                        needs=needs)
    assert str(error.value) == (
        "dataset 'd': 2 of 3 classes have fewer images in a split than this config draws from it:"
        " class 'dog' (folder 'dog'): train 1 of 2, val 1 of 2; class 'owl' (folder 'owl'): val 1 of 2, test 0 of 1."
        " Needed: train: 2 per class for the largest K (2, shots / scaling.shots): lower the largest K or add train"
        " images; val: 2 per class for classify.selection and classify.validation (val, fewshot: min(K, 4) val images"
        " per class): set validation: full or selection: last, or give the class more val images; test: 1 per class"
        " for the classifiers' test split (every class is scored on its own images): give the class test images")
    assert sorted(path.name for path in out.iterdir()) == ["problems.csv"]
    override = _needs(shots=[1], classify={"selection": "val"},
                      datasets={"d": {"source": "miniworld", "overrides": {"classify": {"validation": "full"}}}})
    assert [(need.split, need.count) for need in override] == [("train", 1), ("test", 1)]
    # a K raised after the index was made is caught by the few-shot job, before any model job
    from datadream_core.data.fewshot import draw_fewshot

    index_and_write(spec, "a photo of a {name}", out / "classes.csv", out / "splits.csv", out / "problems.csv",
                    needs=_needs(shots=[1])[:1])
    with pytest.raises(DatasetError, match=r"splits.csv: 1 of 3 classes .*class 'dog' \(folder 'dog'\): train 1 of 2"):
        draw_fewshot(out / "classes.csv", out / "splits.csv", 2, 0, _needs(shots=[2])[:1])


def test_20_tiny_images_are_left_out_and_animated_ones_named(tmp_path, caplog):
    root = _classes(tmp_path / "data")
    pixel = _image(root / "cat" / "pixel.png", size=(1, 1))
    strip = _image(root / "dog" / "strip.png", size=(64, 7))
    frames = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(3)]
    animated = root / "dog" / "moving.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with caplog.at_level(logging.WARNING, logger="datadream"):
        index = read_imagefolder(root)
    assert _problems(index) == {
        str(pixel): "image is 1x1, below the minimum side of 8 px (data.min_image_side): replace it with a larger"
                    " image or lower the limit",
        str(strip): "image is 64x7, below the minimum side of 8 px (data.min_image_side): replace it with a larger"
                    " image or lower the limit",
    }
    assert str(animated) in {item.path for item in index.items}
    assert [record.getMessage() for record in caplog.records if "animated" in record.getMessage()] == [
        f"{animated} is animated (3 frames): only its first frame is used"]
    assert np.asarray(load_rgb(animated))[0, 0].tolist() == [0, 0, 0]
    assert len(read_imagefolder(root, limits=ImageLimits(min_side=1)).items) == 15
    assert validate_config({"datasets": {"d": {"source": "miniworld"}}})["data"]["min_image_side"] == 8


def test_21_a_class_with_one_image_is_warned_about_in_the_singular(tmp_path, caplog):
    root = _classes(tmp_path / "data", per_class=30)
    name = next(f"{i}.png" for i in range(100) if split_of(f"{i}.png", 0, 0.1, 0.2) == "train")
    _image(root / "solo" / name)
    with caplog.at_level(logging.WARNING, logger="datadream"):
        read_imagefolder(root)
    assert "class 'solo' (folder 'solo'): its 1 image gives it no val and no test image" in caplog.text
