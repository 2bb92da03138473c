"""The cache on a run of its own whose models are local folders (identified by content): moving the run plans
nothing, replaced weights replan what read them, a deleted output remakes exactly its job and what depends on it,
and a changed dataset on disk reindexes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, run_snakemake
from datadream_core import layout
from dry_runs import changed, planned_jobs, planned_rules

pytestmark = pytest.mark.e2e


def cache_config(models: Path) -> dict:
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config["dream"]["modes"] = ["cls"]
    config["synth"]["generators"] = ["sd", "datadream_cls"]
    config["synth"]["shard_size"] = 2  # two shard jobs per generator run: a deleted shard remakes only its own
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
    # both of DataDream_cls's shards read the adapter; of sd's, only the deleted shard's job runs again
    assert sorted(wildcards["generator"] for rule, wildcards in jobs if rule == "generate") == [
        "datadream_cls", "datadream_cls", "sd"]
    assert counts == {"train_lora_cls": 1, "generate": 3, "merge_manifest": 2, "train_classifier": 3,
                      "fid_per_class": 2, "table_accuracy": 1, "table_fid": 1, "fid_histogram": 1, "sample_grid": 1,
                      "training_curves": 1, "compute_table": 1}  # the deleted Real-finetune run is drawn there
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
        for i in range(9):  # 8.png falls in the test split, which every run needs
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (30 * i, 100 * class_index, 50)).save(folder / f"{i}.png")
    config = {"datasets": {"insects": {"source": "imagefolder", "root": str(root)}}, "shots": [1], "seeds": [0],
              "threads": {"data": 1}}
    work = tmp_path / "work"
    run_snakemake(work, config, "fewshot")
    assert planned_rules(work, config, "fewshot") == set()
    Image.new("RGB", (16, 16), (255, 255, 255)).save(root / "ant" / "3.png")
    assert planned_rules(work, config, "fewshot") == {"index_dataset", "sample_fewshot"}
    run_snakemake(work, config, "fewshot")
    (root / "bee" / "9.png").write_bytes((root / "bee" / "0.png").read_bytes())
    assert planned_rules(work, config, "fewshot") == {"index_dataset", "sample_fewshot"}


def fabricate_imagefolder(root: Path, classes: list[str], per_class: int = 9) -> None:
    for class_index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (30 * i, 120 * class_index, 60)).save(root / name / f"{i}.png")


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
