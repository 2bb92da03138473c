# Evaluation: per-class FID of each generator's synthetic images against the real images of the class.
# Real-image features are extracted once per dataset, real split and feature type, then reused.

FID = config["fid"]
FID_REAL_FEATURES = "results/{dataset}/fid/real/" + f"{FID['real_split']}_{FID['features']}.npz"


def fid_model_input(wildcards):
    """The tiny CLIP when this workflow builds the CLIP that FID uses; else nothing."""
    return clip_model_input(wildcards) if FID["features"] == "clip" else []


def fid_manifest(wildcards):
    return synth_manifest(wildcards.dataset, wildcards.generator, wildcards.shots, wildcards.seed)


def fid_targets(dataset):
    """Per-class FID tables (and their summaries) of every generator, shots and seed of `dataset`."""
    return expand(
        "results/{dataset}/fid/{generator}/k{shots}_seed{seed}/{name}",
        dataset=dataset,
        generator=config["synth"]["generators"],
        shots=SHOTS,
        seed=SEEDS,
        name=["per_class.csv", "summary.json"],
    )


rule fid_real_features:
    input:
        splits="results/{dataset}/splits.csv",
        model=fid_model_input,
    output:
        FID_REAL_FEATURES,
    log:
        "logs/fid_real_features/{dataset}.log",
    params:
        split=FID["real_split"],
        features=FID["features"],
        inception_weights=FID["inception_weights"],
        clip=config["models"]["clip"],
        batch_size=FID["batch_size"],
    threads: config["threads"]["fid"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,  # runs on CPU too; on a cluster the GPU makes feature extraction and sqrtm fast
    script:
        "../workflow_scripts/fid_real_features.py"


rule fid_per_class:
    input:
        manifest=fid_manifest,
        classes="results/{dataset}/classes.csv",
        real=FID_REAL_FEATURES,
        model=fid_model_input,
    output:
        per_class="results/{dataset}/fid/{generator}/k{shots}_seed{seed}/per_class.csv",
        summary="results/{dataset}/fid/{generator}/k{shots}_seed{seed}/summary.json",
    log:
        "logs/fid_per_class/{dataset}_{generator}_k{shots}_seed{seed}.log",
    params:
        split=FID["real_split"],
        features=FID["features"],
        inception_weights=FID["inception_weights"],
        clip=config["models"]["clip"],
        batch_size=FID["batch_size"],
        n_synth=config["synth"]["n_synth"],  # the images the main classifiers train on, not the scaling extras
    threads: config["threads"]["fid"]
    resources:
        mem_mb=8000,
        runtime=360,
        gpu=1,
    script:
        "../workflow_scripts/fid_per_class.py"
