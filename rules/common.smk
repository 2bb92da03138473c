# Names, paths and job settings shared by the rule files: plain functions of the config, no torch.
#
# The cache contract: every setting a job reads reaches it through `params` (`settings_params`); Snakemake
# replans the job when one that can change its outputs changes, and ignores the rest (speed keys, where a
# model lives on disk). Models and data enter params by content identity.
from functools import lru_cache
from pathlib import Path

from datadream_core import layout
from datadream_core.chunks import chunk_classes, class_chunks, shard_count
from datadream_core.config import (SPEED_ONLY_KEYS, DatasetSpec, JobSettings, OutputNeutral, canonical,
                                   dataset_section, dream_mode_settings, fewshot_size, job_section, synth_count)
from datadream_core.data.build import class_count
from datadream_core.data.fewshot import split_needs
from datadream_core.identity import DigestCache, clip_identity, digest, listing_digest, model_identity, provenance
from datadream_core.memory import memory_ask

DATASETS = sorted(config["datasets"])
SEEDS = config["seeds"]
SHOTS = config["shots"]
FEWSHOT_SIZE = fewshot_size(config)
N_SYNTH = config["synth"]["n_synth"]  # per class, for the main tables; SYNTH_COUNT adds the scaling runs
SYNTH_COUNT = synth_count(config)
GENERATORS = config["synth"]["generators"]
SCALING = config["scaling"]
SCALING_GENERATORS = SCALING["generators"] or GENERATORS
SCALING_DATASETS = SCALING["datasets"] or DATASETS
CLASS_COUNT = {name: class_count(DatasetSpec.from_config(config, name)) for name in DATASETS}
SD_CONFIG = config["models"]["sd"]
CLIP_CONFIG = config["models"]["clip"]
SD_MODEL_MARKER = f"{SD_CONFIG['path']}/model_index.json"
CLIP_MODEL_MARKER = f"{CLIP_CONFIG['name']}/open_clip_config.json"
CAPTIONER_MARKER = f"{config['synth']['captioner']}/config.json"
# The conda environment of every script job (`snakemake --sdm conda`), relative to this folder.
JOB_ENV = "../envs/datadream.yaml"
# Every rule names its job function in params (`job="module:function"`), which one of these scripts calls with
# the rule's named inputs, outputs and params (datadream_core/jobs.py); an input the job only waits for (a model's
# marker file) is unnamed. A model rule's job runs forked from a warm interpreter where the run has one
# (`make run`) and writes the job's cost record (its `cost` output).
MODEL_JOB = "../workflow_scripts/model_job.py"
LIGHT_JOB = "../workflow_scripts/job.py"
# The resources of a light job (tables, figures, merges): the slurm profile's smallest ask.
LIGHT_RESOURCES = {"mem_mb": 2000, "runtime": 10}


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",
    shots=r"\d+",
    mode="dset|cls",
    generator="|".join(layout.GENERATORS),


# ---- identities: models and data by content --------------------------------------------------------------
_DIGESTS = DigestCache()


def _identity_of(build_tiny, tiny_kind, compute):
    """A model this workflow builds is known by its recipe (its marker file is an input); others by content."""
    return f"built:tiny-{tiny_kind}-seed0" if build_tiny else compute()


SD_IDENTITY = _identity_of(SD_CONFIG["build_tiny"], "sd",
                           lambda: model_identity(SD_CONFIG["path"], SD_CONFIG.get("revision"), _DIGESTS))
CLIP_IDENTITY = _identity_of(CLIP_CONFIG["build_tiny"], "clip",
                             lambda: clip_identity(CLIP_CONFIG["name"], CLIP_CONFIG["pretrained"], _DIGESTS))
SD_LOCATION = OutputNeutral({"path": SD_CONFIG["path"], "revision": SD_CONFIG.get("revision")})
CLIP_LOCATION = OutputNeutral({"name": CLIP_CONFIG["name"], "pretrained": CLIP_CONFIG["pretrained"]})


@lru_cache(maxsize=None)
def captioner_identity():
    synth = config["synth"]
    return _identity_of(synth["captioner_build_tiny"], "captioner", lambda: model_identity(synth["captioner"], None, _DIGESTS))


@lru_cache(maxsize=None)
def data_identity(dataset):
    """The dataset's content: a listing of its files (path, size, mtime), or the rendered world's recipe."""
    spec = DatasetSpec.from_config(config, dataset)
    if spec.source == "miniworld":
        return f"world:{digest(dict(spec.world or {}))}"
    root = spec.source_root()
    return f"files:{listing_digest(root)}" if Path(root).is_dir() else f"missing:{root}"


def sd_model_input(wildcards):
    return [SD_MODEL_MARKER] if SD_CONFIG["build_tiny"] else []


def clip_model_input(wildcards):
    return [CLIP_MODEL_MARKER] if CLIP_CONFIG["build_tiny"] else []


# ---- settings: the one way a job gets them -----------------------------------------------------------------
def settings_params(settings_of, model=None, dataset=None):
    """`**`-expanded into a model rule's params: `settings`, the job's JobSettings `settings_of(dataset,
    wildcards)`, and given the `model`'s identity, `provenance`: the provenance its outputs record (the job adds
    its data's identity). `dataset` stands for the {dataset} wildcard of a rule whose paths name it literally."""

    def settings(wildcards):
        return settings_of(dataset or wildcards.dataset, wildcards)

    params = {"settings": settings}
    if model is not None:
        params["provenance"] = lambda wildcards: provenance(settings(wildcards).determining, model)
    return params


def classes_per_job(dataset, stage):
    return dataset_section(config, dataset, stage)["classes_per_job"]


def chunks_of(stage):
    """(dataset, class chunk) of a per-class stage (dream or synth): one rule each, whose outputs name the
    dataset literally, so that Snakemake's output index looks at few rules for each file it plans."""
    return [(dataset, chunk) for dataset in DATASETS
            for chunk in class_chunks(CLASS_COUNT[dataset], classes_per_job(dataset, stage))]


class DatasetWildcards:
    """The wildcards of a rule written for one dataset, with that dataset as if it were a wildcard."""

    def __init__(self, wildcards, dataset):
        self._wildcards = wildcards
        self.dataset = dataset

    def __getattr__(self, name):
        return getattr(self._wildcards, name)


def for_dataset(function, dataset):
    """`function` of wildcards, for a rule whose paths name `dataset` instead of a {dataset} wildcard."""
    return lambda wildcards: function(DatasetWildcards(wildcards, dataset))


def chunk_rule_name(stage_rule, dataset, chunk):
    return f"{stage_rule}_{chunk.replace('-', '_')}_{dataset}"


def n_shards(dataset):
    return shard_count(SYNTH_COUNT, dataset_section(config, dataset, "synth")["shard_size"])


# ---- targets ----------------------------------------------------------------------------------------------
def world_input(wildcards):
    if config["datasets"][wildcards.dataset]["source"] == "miniworld":
        return [layout.world_manifest(wildcards.dataset), layout.world_images(wildcards.dataset)]
    return []


def run_shots(dataset, generator):
    """Every K `generator` has adapters and synthetic images for on `dataset`: the tables' and, where it is in
    the scaling runs, the scaling figure's."""
    in_scaling = dataset in SCALING_DATASETS and generator in SCALING_GENERATORS
    return sorted(set(SHOTS) | (set(SCALING["shots"]) if in_scaling else set()))


# The targets name every file a job writes, not only the ones the tables read: Snakemake skips a job whose
# output went missing when nothing it plans needs that output, so a deleted file is remade only if asked for.
# A job that reads the file is not enough: Snakemake checks a job's inputs for missing files only once the job
# itself is planned (a deleted shard folder does not replan the manifest that lists it, nor its generation).
def dataset_files(dataset):
    files = [layout.classes_csv(dataset), layout.splits_csv(dataset), layout.problems_csv(dataset),
             layout.data_identity_json(dataset)] + [layout.fewshot_csv(dataset, seed) for seed in SEEDS]
    if config["datasets"][dataset]["source"] == "miniworld":
        files += [layout.world_manifest(dataset), layout.world_images(dataset)]
    return files


def lora_targets(dataset):
    targets = []
    for mode in config["dream"]["modes"]:
        classes = range(CLASS_COUNT[dataset]) if mode == "cls" else [None]
        targets += [path for shots in run_shots(dataset, f"datadream_{mode}") for seed in SEEDS for index in classes
                    for path in layout.adapter_files(dataset, mode, shots, seed, index)]
    if "loft" in GENERATORS:
        targets += [path for seed in SEEDS for index in range(CLASS_COUNT[dataset]) for rank in range(FEWSHOT_SIZE)
                    for path in layout.image_adapter_files(dataset, seed, index, rank)]
    return targets


def synth_runs(dataset):
    """(generator, K of its images, seed) of every generation run of `dataset`."""
    return sorted({(generator, layout.synth_shots(generator, shots), seed) for generator in GENERATORS
                   for shots in run_shots(dataset, generator) for seed in SEEDS})


def synth_targets(dataset):
    """Every generator's manifests and shard folders, and disef's captions."""
    targets = []
    for generator, shots, seed in synth_runs(dataset):
        targets.append(layout.synth_manifest(dataset, generator, shots, seed))
        targets += shard_dirs(dataset, generator, shots, seed)
        if generator == "disef":
            targets.append(layout.captions_csv(dataset, shots, seed))
    return targets
