# Names and paths shared by the rule files: plain functions of the config, no file I/O at job time.
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
    scope=r"all|c\d{4}",
    cls=r"\d{4}",
    shard=r"\d{3}",
    generator="sd|datadream_dset|datadream_cls|issynth|disef",


def class_ids(dataset):
    return [f"{index:04d}" for index in range(CLASS_COUNT[dataset])]


def world_input(wildcards):
    if config["datasets"][wildcards.dataset]["source"] == "miniworld":
        return f"results/{wildcards.dataset}/world/manifest.csv"
    return []


def sd_model_input(wildcards):
    return [SD_MODEL_MARKER] if config["models"]["sd"]["build_tiny"] else []


def clip_model_input(wildcards):
    return [CLIP_MODEL_MARKER] if config["models"]["clip"]["build_tiny"] else []


def lora_path(dataset, mode, shots, seed, scope):
    return f"results/{dataset}/dream/{mode}/k{shots}_seed{seed}/{scope}/pytorch_lora_weights.safetensors"


def lora_input(wildcards):
    if wildcards.generator == "datadream_dset":
        return lora_path(wildcards.dataset, "dset", wildcards.shots, wildcards.seed, "all")
    if wildcards.generator == "datadream_cls":
        return lora_path(wildcards.dataset, "cls", wildcards.shots, wildcards.seed, f"c{wildcards.cls}")
    return []


def synth_dir(dataset, generator, shots, seed):
    shots = 0 if generator in SHOT_FREE_GENERATORS else shots
    return f"results/{dataset}/synth/{generator}/k{shots}_seed{seed}"


def synth_manifest(dataset, generator, shots, seed):
    return f"{synth_dir(dataset, generator, shots, seed)}/manifest.csv"


def shard_csvs(wildcards):
    base = synth_dir(wildcards.dataset, wildcards.generator, wildcards.shots, wildcards.seed)
    return [f"{base}/c{cls}/shard{shard:03d}/shard.csv" for cls in class_ids(wildcards.dataset) for shard in range(N_SHARDS)]


def dataset_files(dataset):
    return [f"results/{dataset}/classes.csv", f"results/{dataset}/splits.csv"] + expand(
        "results/{dataset}/fewshot/seed{seed}.csv", dataset=dataset, seed=SEEDS
    )


def lora_targets(dataset):
    scopes = {"dset": ["all"], "cls": [f"c{cls}" for cls in class_ids(dataset)]}
    return [lora_path(dataset, mode, shots, seed, scope) for mode in config["dream"]["modes"]
            for shots in SHOTS for seed in SEEDS for scope in scopes[mode]]


def synth_targets(dataset):
    return sorted({synth_manifest(dataset, generator, shots, seed) for generator in GENERATORS
                   for shots in SHOTS for seed in SEEDS})
