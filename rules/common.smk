# Names and paths shared by the rule files; plain functions of the config, no file I/O.
from datadream_core.config import fewshot_size

DATASETS = sorted(config["datasets"])
SEEDS = config["seeds"]
SHOTS = config["shots"]
FEWSHOT_SIZE = fewshot_size(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    seed=r"\d+",
    shots=r"\d+",


def world_input(wildcards):
    if config["datasets"][wildcards.dataset]["source"] == "miniworld":
        return f"results/{wildcards.dataset}/world/manifest.csv"
    return []


def dataset_files(dataset):
    return [f"results/{dataset}/classes.csv", f"results/{dataset}/splits.csv"] + expand(
        "results/{dataset}/fewshot/seed{seed}.csv", dataset=dataset, seed=SEEDS
    )
