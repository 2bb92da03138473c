# Evaluation: per-class FID of each generator's synthetic images against the real images of the class.
# Real-image features are extracted once per dataset, real split and feature type, then reused.


def fid_settings(dataset, wildcards):
    """The dataset's fid section with the feature model: by identity, and where it lives."""
    fid = dataset_section(config, dataset, "fid")
    weights = fid["inception_weights"]
    if fid["features"] == "clip":
        model = CLIP_IDENTITY
    elif weights and Path(weights).exists():
        model = model_identity(weights, cache=_DIGESTS)
    else:
        model = "pytorch-fid:pt_inception-2015-12-05"
    return JobSettings({**fid, "model_identity": model, **CLIP_LOCATION.values},
                       {"inception_weights", *CLIP_LOCATION.values})


def fid_real_path(dataset):
    fid = dataset_section(config, dataset, "fid")
    return layout.fid_real_features(dataset, fid["real_split"], fid["features"])


def fid_real_cost(dataset, split, features):
    return layout.job_cost_file("fid_real_features", dataset, f"{split}_{features}")


def fid_cost(dataset, generator, shots, seed):
    return layout.job_cost_file("fid_per_class", dataset, f"{generator}_k{shots}_seed{seed}")


def fid_model_input(wildcards):
    """The tiny CLIP when this workflow builds the CLIP that FID uses; else nothing."""
    features = dataset_section(config, wildcards.dataset, "fid")["features"]
    return clip_model_input(wildcards) if features == "clip" else []


def fid_targets(dataset):
    """Per-class FID tables (and their summaries) of every generator, shots and seed of `dataset`, and the real
    images' features they compare with."""
    return [fid_real_path(dataset)] + [path for generator in GENERATORS for shots in SHOTS for seed in SEEDS
                                       for path in (layout.fid_per_class(dataset, generator, shots, seed),
                                                    layout.fid_summary(dataset, generator, shots, seed))]


rule fid_real_features:
    input:
        fid_model_input,
        splits=layout.splits_csv("{dataset}"),
    output:
        features_file=layout.fid_real_features("{dataset}", "{split}", "{features}"),
        cost=fid_real_cost("{dataset}", "{split}", "{features}"),
    log:
        "logs/fid_real_features/{dataset}_{split}_{features}.log",
    wildcard_constraints:
        split="train|val|test",
        features="inception|clip",
    params:
        job="datadream_core.metrics.fid:real_features_job",
        **settings_params(fid_settings),
    threads: config["threads"]["fid"]
    resources:
        mem_mb=memory_ask("fid_real_features"),
        runtime=240,
        gpu=1,  # runs on CPU too; on a cluster the GPU makes feature extraction and sqrtm fast
    conda:
        JOB_ENV
    script:
        MODEL_JOB


rule fid_per_class:
    input:
        fid_model_input,
        manifest=lambda wildcards: layout.synth_manifest(wildcards.dataset, wildcards.generator, wildcards.shots,
                                                         wildcards.seed),
        classes=layout.classes_csv("{dataset}"),
        real=lambda wildcards: fid_real_path(wildcards.dataset),
    output:
        per_class=layout.fid_per_class("{dataset}", "{generator}", "{shots}", "{seed}"),
        summary=layout.fid_summary("{dataset}", "{generator}", "{shots}", "{seed}"),
        cost=fid_cost("{dataset}", "{generator}", "{shots}", "{seed}"),
    log:
        "logs/fid_per_class/{dataset}_{generator}_k{shots}_seed{seed}.log",
    params:
        job="datadream_core.metrics.fid:fid_per_class_job",
        **settings_params(fid_settings),
        n_synth=N_SYNTH,  # the images the main classifiers train on, not the scaling extras
        dataset=lambda wildcards: wildcards.dataset,
        generator=lambda wildcards: wildcards.generator,
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
    threads: config["threads"]["fid"]
    resources:
        mem_mb=memory_ask("fid_per_class"),
        runtime=360,
        gpu=1,
    conda:
        JOB_ENV
    script:
        MODEL_JOB
