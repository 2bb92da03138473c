# Classifier stage: one CLIP classifier per dataset, train set (with its method: lora, coop, vpt), shots, seed
# and n_synth; the zero-shot classifier, which trains on nothing, is evaluated once per dataset and filed under
# every (shots, seed). With classify.search, each grid point is a job of its own and the best-val point is filed.
from datadream_core.classify.trainsets import (KINDS, classifier_trainsets, method_settings, parse_trainset,
                                               search_points)

# Zero-shot CLIP is only evaluated: of the classify section, these keys can change its result.
ZEROSHOT_KEYS = ("logit_scale", "eval_batch_size", "mixed_precision")
TRAINSET_PATTERN = "(real|(real\\+)?synth_(" + "|".join(layout.GENERATORS) + "))(/(coop|vpt))?"
# classify.search: {point name: settings overrides}; empty without a search.
SEARCH_POINTS = search_points(config["classify"]["search"])
CLASSIFIER_RUN = layout.classifier_dir("{dataset}", "{trainset}", "{shots}", "{seed}", "{n_synth}")


def evaluation_inputs(wildcards):
    return {
        "classes_csv": layout.classes_csv(wildcards.dataset),
        "splits_csv": layout.splits_csv(wildcards.dataset),
        "identity": layout.data_identity_json(wildcards.dataset),
    }


def classifier_cost(dataset, trainset, shots, seed, n_synth, point=None):
    """The cost record of a classifier job: a run, or one classify.search point of it."""
    run = f"{trainset}_k{shots}_seed{seed}_n{n_synth}"
    if point is None:
        return layout.job_cost_file("train_classifier", dataset, run)
    return layout.job_cost_file("train_search_point", dataset, f"{run}_{point}")


def classifier_inputs(wildcards):
    files = {**evaluation_inputs(wildcards), "fewshot_csv": layout.fewshot_csv(wildcards.dataset, wildcards.seed)}
    generator = parse_trainset(wildcards.trainset).generator
    if generator is not None:
        files["manifest_csv"] = layout.synth_manifest(wildcards.dataset, generator, wildcards.shots, wildcards.seed)
    return files


def classifier_settings(dataset, wildcards):
    """One classifier job's settings: its method's resolved section for the dataset and K, with the search
    point's values when the job is one point of classify.search."""
    point = wildcards.point if "point" in wildcards.keys() else None
    return resolved_classifier_settings(dataset, parse_trainset(wildcards.trainset).method, int(wildcards.shots), point)


@lru_cache(maxsize=None)
def resolved_classifier_settings(dataset, method, shots, point):
    resolved = method_settings(dataset_section(config, dataset, "classify"), method, shots,
                               SEARCH_POINTS[point] if point else None)
    return JobSettings(resolved, SPEED_ONLY_KEYS["classify"])


def zeroshot_settings(dataset, wildcards):
    resolved = method_settings(dataset_section(config, dataset, "classify"), "lora", 0)
    return JobSettings(resolved, set(resolved) - set(ZEROSHOT_KEYS))


def classifier_runs(methods=None, kinds=KINDS, shots=SHOTS, n_synth=(N_SYNTH,), generators=GENERATORS,
                    datasets=DATASETS):
    """(dataset, train set, shots, seed, n_synth) of the classifier runs of `methods` (default: every configured
    one) and train set `kinds` at these K and n_synth values; train sets without synthetic images use n_synth 0.
    The one list of runs: the classifier targets, the tables and the compute table read it."""
    return sorted({(dataset, name, k, seed, n if parse_trainset(name).generator else 0)
                   for name in classifier_trainsets(config["classify"], generators, methods, kinds)
                   for dataset in datasets for k in shots for seed in SEEDS for n in n_synth})


def classifier_targets(dataset):
    """metrics.json and per_class.csv of every classifier run, and of the one zero-shot evaluation."""
    paths = [path for run in classifier_runs(datasets=[dataset])
             for path in (layout.classifier_metrics(*run), layout.classifier_per_class(*run))]
    if "zeroshot" in config["classify"]["trainsets"]:
        paths += [f"{layout.zeroshot_dir(dataset)}/metrics.json", f"{layout.zeroshot_dir(dataset)}/per_class.csv"]
    return paths


def owned_checkpoint(wildcards, output):
    """The checkpoint a classifier job resumes from: cleaned with its outputs of what a killed run left."""
    return [layout.classifier_checkpoint(output.metrics_json)]


CLASSIFIER_JOB = "datadream_core.classify.train:run_classifier"
CLASSIFIER_PARAMS = dict(
    job=CLASSIFIER_JOB,
    owned=owned_checkpoint,
    dataset=lambda wildcards: wildcards.dataset,
    trainset=lambda wildcards: wildcards.trainset,
    shots=lambda wildcards: int(wildcards.shots),
    seed=lambda wildcards: int(wildcards.seed),
    n_synth=lambda wildcards: int(wildcards.n_synth),
    **settings_params(classifier_settings, model=CLIP_IDENTITY),
    clip=CLIP_LOCATION,
)


rule train_classifier:
    input:
        clip_model_input,
        unpack(classifier_inputs),
    output:
        metrics_json=f"{CLASSIFIER_RUN}/metrics.json",
        per_class_csv=f"{CLASSIFIER_RUN}/per_class.csv",
        cost=classifier_cost("{dataset}", "{trainset}", "{shots}", "{seed}", "{n_synth}"),
    log:
        "logs/train_classifier/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}.log",
    wildcard_constraints:
        trainset=TRAINSET_PATTERN,
        n_synth=r"\d+",
    params:
        **CLASSIFIER_PARAMS,
    threads: config["threads"]["classify"]
    resources:
        mem_mb=memory_ask("train_classifier"),
        runtime=720,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


rule evaluate_zeroshot:
    input:
        clip_model_input,
        unpack(evaluation_inputs),
    output:
        metrics_json=f"{layout.zeroshot_dir('{dataset}')}/metrics.json",
        per_class_csv=f"{layout.zeroshot_dir('{dataset}')}/per_class.csv",
        cost=layout.job_cost_file("evaluate_zeroshot", "{dataset}", "zeroshot"),
    log:
        "logs/evaluate_zeroshot/{dataset}.log",
    params:
        job=CLASSIFIER_JOB,
        owned=owned_checkpoint,
        dataset=lambda wildcards: wildcards.dataset,
        trainset="zeroshot",
        shots=0,
        seed=0,
        n_synth=0,
        **settings_params(zeroshot_settings, model=CLIP_IDENTITY),
        clip=CLIP_LOCATION,
    threads: config["threads"]["classify"]
    resources:
        mem_mb=memory_ask("evaluate_zeroshot"),
        runtime=240,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


rule file_zeroshot:
    input:
        metrics_json=f"{layout.zeroshot_dir('{dataset}')}/metrics.json",
        per_class_csv=f"{layout.zeroshot_dir('{dataset}')}/per_class.csv",
    output:
        out_metrics_json=layout.classifier_metrics("{dataset}", "zeroshot", "{shots}", "{seed}", 0),
        out_per_class_csv=layout.classifier_per_class("{dataset}", "zeroshot", "{shots}", "{seed}", 0),
    log:
        "logs/file_zeroshot/{dataset}_k{shots}_seed{seed}.log",
    params:
        job="datadream_core.classify.zeroshot:file_zeroshot_for_run",
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


# With classify.search, every grid point of a run is its own job under the run's search/ folder, and the
# point with the best validation accuracy is filed as the run's result (select_search_point, a local job).
rule train_search_point:
    input:
        clip_model_input,
        unpack(classifier_inputs),
    output:
        metrics_json=f"{CLASSIFIER_RUN}/search/{{point}}/metrics.json",
        per_class_csv=f"{CLASSIFIER_RUN}/search/{{point}}/per_class.csv",
        cost=classifier_cost("{dataset}", "{trainset}", "{shots}", "{seed}", "{n_synth}", "{point}"),
    log:
        "logs/train_search_point/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}_{point}.log",
    wildcard_constraints:
        trainset=TRAINSET_PATTERN,
        n_synth=r"\d+",
        point="|".join(SEARCH_POINTS) or "no-search",
    params:
        **CLASSIFIER_PARAMS,
    threads: config["threads"]["classify"]
    resources:
        mem_mb=memory_ask("train_search_point"),
        runtime=720,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


if SEARCH_POINTS:

    ruleorder: select_search_point > train_classifier

    localrules:
        select_search_point,

    rule select_search_point:
        input:
            point_metrics=[f"{CLASSIFIER_RUN}/search/{point}/metrics.json" for point in SEARCH_POINTS],
            point_per_class=[f"{CLASSIFIER_RUN}/search/{point}/per_class.csv" for point in SEARCH_POINTS],
        output:
            out_metrics_json=f"{CLASSIFIER_RUN}/metrics.json",
            out_per_class_csv=f"{CLASSIFIER_RUN}/per_class.csv",
        log:
            "logs/select_search_point/{dataset}/{trainset}_k{shots}_seed{seed}_n{n_synth}.log",
        wildcard_constraints:
            trainset=TRAINSET_PATTERN,
            n_synth=r"\d+",
        params:
            job="datadream_core.classify.search:select_search_point_job",
            points=list(SEARCH_POINTS),
        conda:
            JOB_ENV
        script:
            LIGHT_JOB
