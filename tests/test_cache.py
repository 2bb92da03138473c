"""The cache is honest: a job reruns exactly when a setting, the model's content or the data's content that
determines its outputs changed, and a deleted output remakes exactly its job and what depends on it.

Dry runs (`snakemake -n`) on a finished workflow list the jobs Snakemake would run; each check compares
the planned rules (and their wildcards) with the exact set the change must replan.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, run_snakemake
from datadream_core import layout

pytestmark = pytest.mark.e2e

SETUP = {"build_tiny_sd", "build_tiny_clip", "build_tiny_captioner"}
REPORT = {"table_accuracy", "table_fid", "fid_histogram", "sample_grid", "scaling_nsynth", "scaling_shots"}
FROM_INDEX = {"index_dataset", "sample_fewshot", "train_lora_dset", "train_lora_cls", "train_lora_image",
              "caption_shots", "generate",
              "merge_manifest", "train_classifier", "evaluate_zeroshot", "file_zeroshot", "fid_real_features",
              "fid_per_class"} | REPORT
FROM_ADAPTERS = {"train_lora_dset", "train_lora_cls", "generate", "merge_manifest", "train_classifier",
                 "fid_per_class"} | REPORT
FROM_IMAGES = {"generate", "merge_manifest", "train_classifier", "fid_per_class"} | REPORT
# the smoke config's scaling runs are DataDream_cls's only: the other generators' images reach no scaling figure
FROM_OTHER_IMAGES = FROM_IMAGES - {"scaling_nsynth", "scaling_shots"}
CLASSIFIERS = {"train_classifier", "table_accuracy", "scaling_nsynth", "scaling_shots"}
TARGET_RULES = {"all", "fewshot", "loras", "synth", "classifiers", "fid", "tables", "report_inputs"}


def rule_family(name: str) -> str:
    """Chunk rules (train_lora_cls_c0000_c0002_miniworld, generate_c0000_c0002_miniworld) by their family."""
    return re.sub(r"_c\d{4}_c\d{4}_\w+$", "", name)


def planned_jobs(workdir: Path, config: dict, *args: str) -> list[tuple[str, dict]]:
    """(rule family, wildcards) of every job a dry run plans, target rules (all, fewshot, ...) left out."""
    workdir.mkdir(parents=True, exist_ok=True)
    # a file of its own: tests on other workers dry-run the shared smoke run at the same time
    handle, config_path = tempfile.mkstemp(suffix=".yaml", prefix="dry_run_config.")
    with os.fdopen(handle, "w", encoding="utf-8") as config_file:
        config_file.write(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config_path), "--cores", "2", "-n", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.unlink(config_path)
    assert result.returncode == 0, f"dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    jobs, current = [], None
    for line in result.stdout.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if header:
            current = (rule_family(header.group(1)), {})
            if current[0] not in TARGET_RULES and not current[0].startswith("dataset_"):
                jobs.append(current)
        elif current and line.strip().startswith("wildcards:"):
            pairs = line.strip()[len("wildcards:"):].split(",")
            current[1].update(pair.strip().split("=", 1) for pair in pairs if "=" in pair)
    return jobs


def planned_rules(workdir: Path, config: dict, *args: str) -> set[str]:
    return {rule for rule, _ in planned_jobs(workdir, config, *args)}


def changed(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, key = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    return config


# key -> new value -> the exact set of rules the change replans on the finished smoke run
KEY_TABLE = [
    ("data.verify_images", False, FROM_INDEX),
    ("prompt_template", "a {domain}picture of a {name}", FROM_INDEX),
    ("datasets.miniworld.world.test_per_class", 5, {"render_world"} | FROM_INDEX),
    ("dream.epochs", 3, FROM_ADAPTERS),
    ("dream.rank", 8, FROM_ADAPTERS),
    ("dream.loft.epochs", 3, {"train_lora_image"} | FROM_OTHER_IMAGES),
    ("synth.steps", 3, FROM_IMAGES),
    ("synth.disef_strength", 0.5, FROM_OTHER_IMAGES),
    ("classify.learning_rate", 5.0e-4, CLASSIFIERS),
    ("datasets.miniworld.overrides.classify.learning_rate", 5.0e-4, CLASSIFIERS),
    ("classify.eval_batch_size", 32, CLASSIFIERS | {"evaluate_zeroshot", "file_zeroshot"}),
    ("fid.real_split", "val", {"fid_real_features", "fid_per_class", "table_fid", "fid_histogram"}),
    ("report.grid_images", 3, {"sample_grid"}),
    # speed only: nothing is planned
    ("threads.lora", 2, set()),
    ("classify.workers", 1, set()),
    ("classify.eval_cache_mb", 0, set()),
    ("dream.classes_per_job", 1, set()),
    ("dream.checkpoint_every", 1, set()),
    ("synth.classes_per_job", 1, set()),
    ("synth.batch_size", 1, set()),
]


def test_finished_workflow_plans_nothing(smoke_local):
    work, config = smoke_local
    assert planned_rules(work, config) == set()


@pytest.mark.parametrize("key, value, expected", KEY_TABLE, ids=[row[0] for row in KEY_TABLE])
def test_a_changed_key_replans_exactly_its_rules(smoke_local, key, value, expected):
    work, config = smoke_local
    # the compute table sums every job's benchmark: it is remade after any job
    assert planned_rules(work, changed(config, key, value)) == (expected | {"compute_table"} if expected else set())


def reversed_keys(value):
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def test_the_order_of_keys_in_the_config_plans_nothing(smoke_local):
    """Params are compared by their text, so every dict a job gets must not depend on the config's key order."""
    work, config = smoke_local
    assert planned_rules(work, reversed_keys(changed(config, "dream.rank", config["dream"].get("rank", 16)))) == set()


def test_a_generator_only_key_replans_only_that_generator(smoke_local):
    work, config = smoke_local
    jobs = planned_jobs(work, changed(config, "synth.disef_strength", 0.5))
    generated = {wildcards["generator"] for rule, wildcards in jobs if rule in ("generate", "merge_manifest")}
    trained = {wildcards["trainset"] for rule, wildcards in jobs if rule == "train_classifier"}
    assert generated == {"disef"}
    assert trained == {"synth_disef", "real+synth_disef"}


# --- a run of its own on local model folders, for changes to model weights and for deletions ----------------

def cache_config(models: Path) -> dict:
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config["dream"]["modes"] = ["cls"]
    config["synth"]["generators"] = ["sd", "datadream_cls"]
    config["synth"]["shard_size"] = None
    config["classify"].update(trainsets=["real", "synth"], methods=["lora"])
    config["scaling"] = {"n_synth": [], "shots": []}
    config["models"] = {"sd": {"path": str(models / "sd")}, "clip": {"name": str(models / "clip"), "pretrained": ""}}
    return config


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory):
    """A small finished workflow whose models are local folders (identified by content)."""
    from datadream_core.models.tiny import build_tiny_clip, build_tiny_sd

    work = tmp_path_factory.mktemp("cache_run")
    build_tiny_sd(work / "models/sd", seed=0)
    build_tiny_clip(work / "models/clip", seed=0)
    config = cache_config(work / "models")
    run_snakemake(work, config)
    return work, config


def copy_of(run: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    """The finished run copied with its metadata and modification times, so that a test can change it."""
    work, _ = run
    target = tmp_path / "work"
    shutil.copytree(work, target, symlinks=True, copy_function=shutil.copy2)
    return target, cache_config(target / "models")


def test_moving_the_finished_run_plans_nothing(cache_run, tmp_path):
    work, config = copy_of(cache_run, tmp_path)  # model folders at a new path, same content
    assert planned_rules(work, config) == set()


def test_replaced_sd_weights_replan_adapters_images_and_classifiers(cache_run, tmp_path):
    from datadream_core.models.tiny import build_tiny_sd

    work, config = copy_of(cache_run, tmp_path)
    other = build_tiny_sd(tmp_path / "other_sd", seed=1)
    unet = Path("unet/diffusion_pytorch_model.safetensors")
    shutil.copyfile(Path(other) / unet, work / "models/sd" / unet)
    os.utime(work / "models/sd" / unet, ns=(1, 1))  # an old modification time: only the content tells
    jobs = planned_jobs(work, config)
    assert {rule for rule, _ in jobs} == {"train_lora_cls", "generate", "merge_manifest", "train_classifier",
                                          "fid_per_class", "table_accuracy", "table_fid", "fid_histogram", "sample_grid",
                                          "compute_table"}
    assert {wildcards["trainset"] for rule, wildcards in jobs if rule == "train_classifier"} == {
        "synth_sd", "synth_datadream_cls"}  # `real` reads no image of Stable Diffusion


def modification_times(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*")
            if path.is_file() and "/.snakemake/" not in f"/{path.relative_to(root)}"}


def test_deleted_outputs_remake_exactly_their_jobs(cache_run, tmp_path):
    work, config = copy_of(cache_run, tmp_path)
    adapter = work / layout.adapter_files("miniworld", "cls", 2, 0, 1)[0]
    shard = work / layout.shard_dir("miniworld", "sd", 2, 0, 2, 0)
    metrics = work / "results/miniworld/clf/real/k2_seed0/n0/metrics.json"
    adapter.unlink()
    shutil.rmtree(shard)
    metrics.unlink()
    jobs = planned_jobs(work, config)
    counts = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    assert counts == {"train_lora_cls": 1, "generate": 2, "merge_manifest": 2, "train_classifier": 3,
                      "fid_per_class": 2, "table_accuracy": 1, "table_fid": 1, "fid_histogram": 1, "sample_grid": 1,
                      "compute_table": 1}
    untouched = [path for path in modification_times(work) if path.startswith("results/miniworld/fewshot")
                 or path.startswith("results/models") or path.startswith("results/miniworld/world")]
    before = modification_times(work)
    run_snakemake(work, config)
    after = modification_times(work)
    assert adapter.is_file() and (shard / "000000.png").is_file() and metrics.is_file()
    assert {path: after[path] for path in untouched} == {path: before[path] for path in untouched}
    assert planned_rules(work, config) == set()


def test_forceall_after_a_prompt_change_leaves_no_stale_image(cache_run, tmp_path):
    from datadream_core.io import read_csv

    work, config = copy_of(cache_run, tmp_path)
    config = changed(config, "prompt_template", "a {domain}drawing of a {name}")
    run_snakemake(work, config, "synth", "--forceall")  # every job up to the images, each made again
    shard_csvs = sorted((work / "results/miniworld/synth").rglob("shard.csv"))
    assert shard_csvs
    for shard_csv in shard_csvs:
        for row in read_csv(shard_csv):
            assert "drawing of a" in row["prompt"]
            with Image.open(row["path"] if Path(row["path"]).is_absolute() else work / row["path"]) as image:
                assert image.text["prompt"] == row["prompt"]


def test_replaced_dataset_image_reindexes(tmp_path):
    """An imagefolder dataset is known by a listing of its files: new content under the same name reindexes."""
    root = tmp_path / "data"
    for class_index, name in enumerate(["ant", "bee"]):
        for i in range(6):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (40 * i, 100 * class_index, 50)).save(folder / f"{i}.png")
    config = {"datasets": {"insects": {"source": "imagefolder", "root": str(root)}}, "shots": [1], "seeds": [0],
              "threads": {"data": 1}}
    work = tmp_path / "work"
    run_snakemake(work, config, "fewshot")
    assert planned_rules(work, config, "fewshot") == set()
    Image.new("RGB", (16, 16), (255, 255, 255)).save(root / "ant" / "3.png")
    assert planned_rules(work, config, "fewshot") == {"index_dataset", "sample_fewshot"}
    run_snakemake(work, config, "fewshot")
    (root / "bee" / "6.png").write_bytes((root / "bee" / "0.png").read_bytes())
    assert planned_rules(work, config, "fewshot") == {"index_dataset", "sample_fewshot"}


def fabricate_imagefolder(root: Path, classes: list[str], per_class: int = 6) -> None:
    for class_index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (40 * i, 120 * class_index, 60)).save(root / name / f"{i}.png")


def test_a_dataset_override_replans_only_that_dataset(tmp_path):
    from datadream_core.models.tiny import build_tiny_sd

    build_tiny_sd(tmp_path / "sd", seed=0)
    fabricate_imagefolder(tmp_path / "ants", ["black", "red"])
    fabricate_imagefolder(tmp_path / "bees", ["honey", "bumble"])
    config = {"datasets": {name: {"source": "imagefolder", "root": str(tmp_path / name)} for name in ("ants", "bees")},
              "shots": [1], "seeds": [0], "threads": {"data": 1, "lora": 1},
              "models": {"sd": {"path": str(tmp_path / "sd")}},
              "dream": {"modes": ["dset"], "epochs": 1, "batch_size": 2, "warmup_steps": 0}}
    work = tmp_path / "work"
    run_snakemake(work, config, "loras")
    overridden = changed(config, "datasets.ants.overrides.dream.epochs", 2)
    assert [(rule, wildcards["dataset"]) for rule, wildcards in planned_jobs(work, overridden, "loras")] == [
        ("train_lora_dset", "ants")]
    assert planned_rules(work, changed(config, "datasets.ants.overrides.dream.dset_epochs", 1), "loras") == set()
