"""The results/ vocabulary: every path builder and the generator / train-set names, in one torch-free module.

Rules (through rules/common.smk) and the core both build paths here, so a path is written once. Arguments
may be Snakemake wildcard patterns ("{dataset}") as well as values; class indices must be integers.

Per-class outputs (adapters, shard folders) put the class before the run (k{K}_seed{s}): a class chunk's rule
names its dataset and classes literally and leaves the run to wildcards, and Snakemake's output index groups
outputs by their text before the first wildcard, so for each file it plans it looks at that class's outputs
alone instead of every class's of the dataset.
"""

from __future__ import annotations

import os
from typing import Callable

GENERATORS = ("sd", "datadream_dset", "datadream_cls", "issynth", "disef", "loft")
# The unadapted model sees no real image, so its samples do not depend on K: one set per seed, under k0.
SHOT_FREE_GENERATORS = frozenset({"sd"})
# img2img generators start from the K real shots (disef also from their captions).
REAL_SHOT_GENERATORS = frozenset({"issynth", "disef"})
ADAPTER_MODE = {"datadream_dset": "dset", "datadream_cls": "cls"}
DREAM_MODES = ("dset", "cls")
LORA_FILE = "pytorch_lora_weights.safetensors"
# An adapter's declared files: the weights and train.json (its provenance); losses.csv beside them is for people.
ADAPTER_FILES = (LORA_FILE, "train.json")


def class_folder(class_index: int) -> str:
    return f"c{int(class_index):04d}"


def run_name(shots, seed) -> str:
    return f"k{shots}_seed{seed}"


def dataset_dir(dataset) -> str:
    return f"results/{dataset}"


def _dataset_file(relative: str) -> Callable[[str], str]:
    """The path builder of the file (or folder) at `relative` in a dataset's folder."""

    def build(dataset) -> str:
        return f"{dataset_dir(dataset)}/{relative}"

    return build


classes_csv = _dataset_file("classes.csv")
splits_csv = _dataset_file("splits.csv")
# The content identity of the data indexed (written once by index_dataset, read for provenance).
data_identity_json = _dataset_file("identity.json")
problems_csv = _dataset_file("problems.csv")
world_manifest = _dataset_file("world/manifest.csv")
# The rendered miniature world: {split}/{class name}/{i:05d}.png below this folder.
world_images = _dataset_file("world/images")


def fewshot_csv(dataset, seed) -> str:
    return f"{dataset_dir(dataset)}/fewshot/seed{seed}.csv"


def adapter_dir(dataset, mode, shots, seed, class_index: int | None = None) -> str:
    """mode dset: the one adapter, under all/; mode cls: class `class_index`'s adapter."""
    scope = "all" if class_index is None else class_folder(class_index)
    return f"{dataset_dir(dataset)}/dream/{mode}/{scope}/{run_name(shots, seed)}"


def adapter_files(dataset, mode, shots, seed, class_index: int | None = None) -> list[str]:
    """The files of one adapter that later jobs and people rely on: the weights and train.json (provenance)."""
    folder = adapter_dir(dataset, mode, shots, seed, class_index)
    return [f"{folder}/{name}" for name in ADAPTER_FILES]


def adapter_folders(files) -> list[str]:
    """The folders of the adapters whose files (ADAPTER_FILES of each, in turn) `files` lists."""
    return [os.path.dirname(path) for path in files[::len(ADAPTER_FILES)]]


def classifier_checkpoint(metrics_json) -> str:
    """Where a classifier run checkpoints its training: beside its metrics.json."""
    return os.path.join(os.path.dirname(metrics_json), "checkpoint.pt")


def image_adapter_dir(dataset, seed, class_index: int, rank: int) -> str:
    """LoFT's adapter of one real image: shot `rank` of class `class_index` in the seed's few-shot list.

    It has no K: the K-shot set is the first K shots of one nested list, so every K reads the same adapters.
    """
    return f"{dataset_dir(dataset)}/dream/image/{class_folder(class_index)}/shot{int(rank):02d}/seed{seed}"


def image_adapter_files(dataset, seed, class_index: int, rank: int) -> list[str]:
    folder = image_adapter_dir(dataset, seed, class_index, rank)
    return [f"{folder}/{name}" for name in ADAPTER_FILES]


def captions_csv(dataset, shots, seed) -> str:
    return f"{dataset_dir(dataset)}/captions/{run_name(shots, seed)}.csv"


def synth_shots(generator, shots):
    return 0 if generator in SHOT_FREE_GENERATORS else shots


def synth_dir(dataset, generator, shots, seed) -> str:
    return f"{dataset_dir(dataset)}/synth/{generator}/{run_name(synth_shots(generator, shots), seed)}"


def shard_dir(dataset, generator, shots, seed, class_index: int, shard) -> str:
    """One class's images of one shard, with its shard.csv; the run's manifest (synth_manifest) lists them."""
    shard = shard if isinstance(shard, str) else f"{shard:03d}"
    run = run_name(synth_shots(generator, shots), seed)
    return f"{dataset_dir(dataset)}/synth/{class_folder(class_index)}/{generator}/{run}/shard{shard}"


def synth_manifest(dataset, generator, shots, seed) -> str:
    return f"{synth_dir(dataset, generator, shots, seed)}/manifest.csv"


def classifier_dir(dataset, trainset, shots, seed, n_synth) -> str:
    return f"{dataset_dir(dataset)}/clf/{trainset}/{run_name(shots, seed)}/n{n_synth}"


def classifier_metrics(dataset, trainset, shots, seed, n_synth) -> str:
    return f"{classifier_dir(dataset, trainset, shots, seed, n_synth)}/metrics.json"


def classifier_per_class(dataset, trainset, shots, seed, n_synth) -> str:
    return f"{classifier_dir(dataset, trainset, shots, seed, n_synth)}/per_class.csv"


def zeroshot_dir(dataset) -> str:
    """The dataset's one zero-shot evaluation (filed under every K and seed by file_zeroshot)."""
    return f"{dataset_dir(dataset)}/clf/zeroshot"


def fid_real_features(dataset, split, features) -> str:
    return f"{dataset_dir(dataset)}/fid/real/{split}_{features}.npz"


def fid_dir(dataset, generator, shots, seed) -> str:
    return f"{dataset_dir(dataset)}/fid/{generator}/{run_name(shots, seed)}"


def fid_per_class(dataset, generator, shots, seed) -> str:
    return f"{fid_dir(dataset, generator, shots, seed)}/per_class.csv"


def fid_summary(dataset, generator, shots, seed) -> str:
    return f"{fid_dir(dataset, generator, shots, seed)}/summary.json"


SUMMARY_DIR = "results/summary"


def summary_file(name: str) -> str:
    return f"{SUMMARY_DIR}/{name}"


BENCHMARKS_DIR = "results/benchmarks"
SHARED = "_shared"  # the "dataset" of a model job that serves every dataset


def job_cost_file(rule, dataset, job) -> str:
    """The cost record (wall time, CPU time, peak memory) of one job of a model rule: `rule` is the rule family
    (the same for every class chunk), `job` names the job within the rule and dataset, like its log."""
    return f"{BENCHMARKS_DIR}/{rule}/{dataset}/{job}.json"
