# Classifier stage: one CLIP LoRA classifier per dataset, train set, shots, seed and n_synth.
# Uses SHOTS, SEEDS, synth_manifest and clip_model_input from common.smk.
from datadream_core.classify.trainsets import parse_trainset, trainset_names

CLASSIFIER_GENERATORS = ["sd", "datadream_dset", "datadream_cls", "issynth", "disef"]


def classifier_inputs(wildcards):
    files = {
        "classes": f"results/{wildcards.dataset}/classes.csv",
        "splits": f"results/{wildcards.dataset}/splits.csv",
        "fewshot": f"results/{wildcards.dataset}/fewshot/seed{wildcards.seed}.csv",
        "clip_model": clip_model_input(wildcards),
    }
    generator = parse_trainset(wildcards.trainset).generator
    if generator is not None:
        files["manifest"] = synth_manifest(wildcards.dataset, generator, wildcards.shots, wildcards.seed)
    return files


def classifier_targets(dataset):
    """metrics.json of every configured train set, shots and seed; synthetic sets use synth.n_synth images."""
    paths = []
    for name in trainset_names(config["classify"]["trainsets"], config["synth"]["generators"]):
        n_synth = config["synth"]["n_synth"] if parse_trainset(name).generator else 0
        paths += expand("results/{dataset}/clf/{trainset}/k{shots}_seed{seed}/n{n_synth}/metrics.json",
                        dataset=dataset, trainset=name, shots=SHOTS, seed=SEEDS, n_synth=n_synth)
    return paths


rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        metrics="results/{dataset}/clf/{trainset}/k{shots}_seed{seed}/n{n_synth}/metrics.json",
        per_class="results/{dataset}/clf/{trainset}/k{shots}_seed{seed}/n{n_synth}/per_class.csv",
    log:
        "logs/train_classifier/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}.log",
    wildcard_constraints:
        trainset="zeroshot|real|(real\\+)?synth_(" + "|".join(CLASSIFIER_GENERATORS) + ")",
        n_synth=r"\d+",
    params:
        trainset=lambda wildcards: wildcards.trainset,
        shots=lambda wildcards: int(wildcards.shots),
        n_synth=lambda wildcards: int(wildcards.n_synth),
    threads: config["threads"]["classify"]
    resources:
        mem_mb=16000,
        runtime=720,
    script:
        "../workflow_scripts/classify.py"
