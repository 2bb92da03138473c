# Classifier stage: one CLIP LoRA classifier per dataset, train set, shots, seed and n_synth; the zero-shot
# classifier, which trains on nothing, is evaluated once per dataset and filed under every (shots, seed).
from datadream_core.classify.trainsets import parse_trainset, trainset_names

# Zero-shot CLIP is only evaluated: of the classify section, these keys can change its result.
ZEROSHOT_KEYS = ("logit_scale", "eval_batch_size", "mixed_precision")


def evaluation_inputs(wildcards):
    return {
        "classes": layout.classes_csv(wildcards.dataset),
        "splits": layout.splits_csv(wildcards.dataset),
        "clip_model": clip_model_input(wildcards),
    }


def classifier_inputs(wildcards):
    files = {**evaluation_inputs(wildcards), "fewshot": layout.fewshot_csv(wildcards.dataset, wildcards.seed)}
    generator = parse_trainset(wildcards.trainset).generator
    if generator is not None:
        files["manifest"] = layout.synth_manifest(wildcards.dataset, generator, wildcards.shots, wildcards.seed)
    return files


def classifier_params(wildcards):
    return stage_settings(wildcards.dataset, "classify")


def zeroshot_params(wildcards):
    return stage_settings(wildcards.dataset, "classify", ZEROSHOT_KEYS)


def classifier_made_from(settings_of):
    def made_from(wildcards):
        return {"settings_digest": digest(settings_of(wildcards)[0]), "model_identity": CLIP_IDENTITY,
                "data_identity": data_identity(wildcards.dataset)}

    return made_from


def classifier_targets(dataset):
    """metrics.json of every configured train set, shots and seed; synthetic sets use synth.n_synth images."""
    paths = []
    for name in trainset_names(config["classify"]["trainsets"], GENERATORS):
        n_synth = config["synth"]["n_synth"] if parse_trainset(name).generator else 0
        paths += [layout.clf_metrics(dataset, name, shots, seed, n_synth) for shots in SHOTS for seed in SEEDS]
    return paths


rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        metrics=layout.clf_metrics("{dataset}", "{trainset}", "{shots}", "{seed}", "{n_synth}"),
        per_class=layout.clf_per_class("{dataset}", "{trainset}", "{shots}", "{seed}", "{n_synth}"),
    log:
        "logs/train_classifier/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}.log",
    wildcard_constraints:
        trainset="real|(real\\+)?synth_(" + "|".join(layout.GENERATORS) + ")",
        n_synth=r"\d+",
    params:
        trainset=lambda wildcards: wildcards.trainset,
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
        n_synth=lambda wildcards: int(wildcards.n_synth),
        settings=lambda wildcards: classifier_params(wildcards)[0],
        neutral=lambda wildcards: classifier_params(wildcards)[1],
        made_from=classifier_made_from(classifier_params),
        clip_location=CLIP_LOCATION,
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
        metrics=f"{layout.zeroshot_dir('{dataset}')}/metrics.json",
        per_class=f"{layout.zeroshot_dir('{dataset}')}/per_class.csv",
    log:
        "logs/evaluate_zeroshot/{dataset}.log",
    params:
        trainset="zeroshot",
        shots=0,
        seed=0,
        n_synth=0,
        settings=lambda wildcards: zeroshot_params(wildcards)[0],
        neutral=lambda wildcards: zeroshot_params(wildcards)[1],
        made_from=classifier_made_from(zeroshot_params),
        clip_location=CLIP_LOCATION,
    threads: config["threads"]["classify"]
    resources:
        mem_mb=16000,
        runtime=240,
    script:
        "../workflow_scripts/classify.py"


rule file_zeroshot:
    input:
        metrics=f"{layout.zeroshot_dir('{dataset}')}/metrics.json",
        per_class=f"{layout.zeroshot_dir('{dataset}')}/per_class.csv",
    output:
        metrics=layout.clf_metrics("{dataset}", "zeroshot", "{shots}", "{seed}", 0),
        per_class=layout.clf_per_class("{dataset}", "zeroshot", "{shots}", "{seed}", 0),
    log:
        "logs/file_zeroshot/{dataset}_k{shots}_seed{seed}.log",
    script:
        "../workflow_scripts/file_zeroshot.py"
