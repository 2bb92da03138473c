# Names and paths shared by the rule files: plain functions of the config, no file I/O at job time.
from datadream_core.chunks import CHUNK_PATTERN, chunk_classes, chunk_of, class_chunks
from datadream_core.config import DatasetSpec, fewshot_size, synth_count
from datadream_core.data.build import class_count
from datadream_core.synth.sampler import shard_count

DATASETS = sorted(config["datasets"])
SEEDS = config["seeds"]
SHOTS = config["shots"]
FEWSHOT_SIZE = fewshot_size(config)
SYNTH_COUNT = synth_count(config)
N_SHARDS = shard_count(SYNTH_COUNT, config["synth"]["shard_size"])
GENERATORS = config["synth"]["generators"]
CLASS_COUNT = {name: class_count(DatasetSpec.from_config(config, name)) for name in DATASETS}
SD_MODEL_MARKER = f"{config['models']['sd']['path']}/model_index.json"
CLIP_MODEL_MARKER = f"{config['models']['clip']['name']}/open_clip_config.json"
# The unadapted model sees no real image, so its samples do not depend on K: one set, under k0.
SHOT_FREE_GENERATORS = {"sd"}


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",
    shots=r"\d+",
    mode="dset|cls",
    chunk=CHUNK_PATTERN,
    shard=r"\d{3}",
    generator="sd|datadream_dset|datadream_cls|issynth|disef",


def world_input(wildcards):
    if config["datasets"][wildcards.dataset]["source"] == "miniworld":
        return f"results/{wildcards.dataset}/world/manifest.csv"
    return []


def sd_model_input(wildcards):
    return [SD_MODEL_MARKER] if config["models"]["sd"]["build_tiny"] else []


def clip_model_input(wildcards):
    return [CLIP_MODEL_MARKER] if config["models"]["clip"]["build_tiny"] else []


def cls_chunk_marker(dataset, shots, seed, chunk):
    return f"results/{dataset}/dream/cls/k{shots}_seed{seed}/chunks/{chunk}.json"


def dset_adapter(dataset, shots, seed):
    return f"results/{dataset}/dream/dset/k{shots}_seed{seed}/all/pytorch_lora_weights.safetensors"


def generation_adapters(wildcards):
    """The adapter file (dset) or the class-chunk markers (cls) a generation chunk needs."""
    if wildcards.generator == "datadream_dset":
        return [dset_adapter(wildcards.dataset, wildcards.shots, wildcards.seed)]
    if wildcards.generator == "datadream_cls":
        n_classes, per_job = CLASS_COUNT[wildcards.dataset], config["dream"]["classes_per_job"]
        chunks = {chunk_of(index, n_classes, per_job) for index in chunk_classes(wildcards.chunk)}
        return sorted(cls_chunk_marker(wildcards.dataset, wildcards.shots, wildcards.seed, chunk) for chunk in chunks)
    return []


def synth_dir(dataset, generator, shots, seed):
    shots = 0 if generator in SHOT_FREE_GENERATORS else shots
    return f"results/{dataset}/synth/{generator}/k{shots}_seed{seed}"


def synth_manifest(dataset, generator, shots, seed):
    return f"{synth_dir(dataset, generator, shots, seed)}/manifest.csv"


def chunk_csvs(wildcards):
    base = synth_dir(wildcards.dataset, wildcards.generator, wildcards.shots, wildcards.seed)
    chunks = class_chunks(CLASS_COUNT[wildcards.dataset], config["synth"]["classes_per_job"])
    return [f"{base}/chunks/{chunk}_shard{shard:03d}.csv" for chunk in chunks for shard in range(N_SHARDS)]


def dataset_files(dataset):
    return [f"results/{dataset}/classes.csv", f"results/{dataset}/splits.csv"] + expand(
        "results/{dataset}/fewshot/seed{seed}.csv", dataset=dataset, seed=SEEDS
    )


def lora_targets(dataset):
    targets = []
    for shots in SHOTS:
        for seed in SEEDS:
            if "dset" in config["dream"]["modes"]:
                targets.append(dset_adapter(dataset, shots, seed))
            if "cls" in config["dream"]["modes"]:
                targets += [cls_chunk_marker(dataset, shots, seed, chunk)
                            for chunk in class_chunks(CLASS_COUNT[dataset], config["dream"]["classes_per_job"])]
    return targets


def synth_targets(dataset):
    return sorted({synth_manifest(dataset, generator, shots, seed) for generator in GENERATORS
                   for shots in SHOTS for seed in SEEDS})
