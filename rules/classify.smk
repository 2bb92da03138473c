# Classifier stage: one CLIP classifier per dataset, train set (with its method: lora, coop, vpt), shots, seed
# and n_synth; the zero-shot classifier, which trains on nothing, is evaluated once per dataset and filed under
# every (shots, seed). Uses SHOTS, SEEDS, synth_manifest and clip_model_input from common.smk.
from datadream_core.classify.trainsets import classifier_trainsets, method_settings, parse_trainset, search_points

CLASSIFIER_GENERATORS = ["sd", "datadream_dset", "datadream_cls", "issynth", "disef"]


def evaluation_inputs(wildcards):
    return {
        "classes": f"results/{wildcards.dataset}/classes.csv",
        "splits": f"results/{wildcards.dataset}/splits.csv",
        "clip_model": clip_model_input(wildcards),
    }


def classifier_inputs(wildcards):
    files = {**evaluation_inputs(wildcards), "fewshot": f"results/{wildcards.dataset}/fewshot/seed{wildcards.seed}.csv"}
    generator = parse_trainset(wildcards.trainset).generator
    if generator is not None:
        files["manifest"] = synth_manifest(wildcards.dataset, generator, wildcards.shots, wildcards.seed)
    return files


# classify.search: {point name: settings overrides}; empty without a search.
SEARCH_POINTS = search_points(config["classify"]["search"])
CLASSIFIER_RUN = "results/{dataset}/clf/{trainset}/k{shots}_seed{seed}/n{n_synth}"


def classifier_settings(wildcards):
    """The settings one classifier job trains with: its method's resolved `classify` section for its K, with the
    search point's values when the job is one point of classify.search."""
    overrides = SEARCH_POINTS[wildcards.point] if "point" in wildcards.keys() else None
    return method_settings(config["classify"], parse_trainset(wildcards.trainset).method, int(wildcards.shots), overrides)


def classifier_targets(dataset):
    """metrics.json of every configured method, train set, shots and seed; synthetic sets use synth.n_synth images."""
    paths = []
    for name in classifier_trainsets(config["classify"], config["synth"]["generators"]):
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
        trainset="(real|(real\\+)?synth_(" + "|".join(CLASSIFIER_GENERATORS) + "))(/(coop|vpt))?",
        n_synth=r"\d+",
    params:
        trainset=lambda wildcards: wildcards.trainset,
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
        n_synth=lambda wildcards: int(wildcards.n_synth),
        classify=classifier_settings,
        clip=config["models"]["clip"],
    threads: config["threads"]["classify"]
    resources:
        mem_mb=16000,
        runtime=720,
    script:
        "../workflow_scripts/classify.py"


rule evaluate_zeroshot:
    input:
        unpack(evaluation_inputs),
    output:
        metrics="results/{dataset}/clf/zeroshot/metrics.json",
        per_class="results/{dataset}/clf/zeroshot/per_class.csv",
    log:
        "logs/evaluate_zeroshot/{dataset}.log",
    params:
        trainset="zeroshot",
        shots=0,
        seed=0,
        n_synth=0,
        classify=method_settings(config["classify"], "lora", 0),
        clip=config["models"]["clip"],
    threads: config["threads"]["classify"]
    resources:
        mem_mb=16000,
        runtime=240,
    script:
        "../workflow_scripts/classify.py"


rule file_zeroshot:
    input:
        metrics="results/{dataset}/clf/zeroshot/metrics.json",
        per_class="results/{dataset}/clf/zeroshot/per_class.csv",
    output:
        metrics="results/{dataset}/clf/zeroshot/k{shots}_seed{seed}/n0/metrics.json",
        per_class="results/{dataset}/clf/zeroshot/k{shots}_seed{seed}/n0/per_class.csv",
    log:
        "logs/file_zeroshot/{dataset}_k{shots}_seed{seed}.log",
    script:
        "../workflow_scripts/file_zeroshot.py"


# With classify.search, every grid point of a run is its own job under the run's search/ folder, and the
# point with the best validation accuracy is filed as the run's result (select_search_point, a local job).
rule train_search_point:
    input:
        unpack(classifier_inputs),
    output:
        metrics=CLASSIFIER_RUN + "/search/{point}/metrics.json",
        per_class=CLASSIFIER_RUN + "/search/{point}/per_class.csv",
    log:
        "logs/train_search_point/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}_{point}.log",
    wildcard_constraints:
        trainset="(real|(real\\+)?synth_(" + "|".join(CLASSIFIER_GENERATORS) + "))(/(coop|vpt))?",
        n_synth=r"\d+",
        point="|".join(SEARCH_POINTS) or "no-search",
    params:
        trainset=lambda wildcards: wildcards.trainset,
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
        n_synth=lambda wildcards: int(wildcards.n_synth),
        classify=classifier_settings,
        clip=config["models"]["clip"],
    threads: config["threads"]["classify"]
    resources:
        mem_mb=16000,
        runtime=720,
    script:
        "../workflow_scripts/classify.py"


if SEARCH_POINTS:

    ruleorder: select_search_point > train_classifier

    localrules:
        select_search_point,

    rule select_search_point:
        input:
            metrics=expand(CLASSIFIER_RUN + "/search/{point}/metrics.json", point=SEARCH_POINTS, allow_missing=True),
            per_class=expand(CLASSIFIER_RUN + "/search/{point}/per_class.csv", point=SEARCH_POINTS, allow_missing=True),
        output:
            metrics=CLASSIFIER_RUN + "/metrics.json",
            per_class=CLASSIFIER_RUN + "/per_class.csv",
        log:
            "logs/select_search_point/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}.log",
        wildcard_constraints:
            trainset="(real|(real\\+)?synth_(" + "|".join(CLASSIFIER_GENERATORS) + "))(/(coop|vpt))?",
            n_synth=r"\d+",
        params:
            points=list(SEARCH_POINTS),
        script:
            "../workflow_scripts/select_search_point.py"
