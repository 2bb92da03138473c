from datadream_core.models.fetch import describe as describe_model, models_in_config

# Tiny randomly initialised models for smoke runs and tests (models.*.build_tiny: true).

if config["models"]["sd"]["build_tiny"]:

    rule build_tiny_sd:
        output:
            marker=SD_MODEL_MARKER,
        log:
            "logs/build_tiny_models/sd.log",
        params:
            job="datadream_core.models.tiny:build_tiny_model",
            kind="sd",
        resources:
            **LIGHT_RESOURCES,
        conda:
            JOB_ENV
        script:
            MODEL_JOB


if config["models"]["clip"]["build_tiny"]:

    rule build_tiny_clip:
        output:
            marker=CLIP_MODEL_MARKER,
        log:
            "logs/build_tiny_models/clip.log",
        params:
            job="datadream_core.models.tiny:build_tiny_model",
            kind="clip",
        resources:
            **LIGHT_RESOURCES,
        conda:
            JOB_ENV
        script:
            MODEL_JOB


# DISEF's captioner: a tiny randomly initialised BLIP (synth.captioner_build_tiny: true).

if config["synth"]["captioner_build_tiny"]:

    rule build_tiny_captioner:
        output:
            marker=CAPTIONER_MARKER,
        log:
            "logs/build_tiny_models/captioner.log",
        params:
            job="datadream_core.models.tiny:build_tiny_model",
            kind="captioner",
        resources:
            **LIGHT_RESOURCES,
        conda:
            JOB_ENV
        script:
            MODEL_JOB


# The miniature world's base models (VAE + SD on the SOURCE world, and a CLIP), trained from a seed:
# `snakemake miniworld_models --cores 2` (about 45 min on 2 cores; `quick` budgets take seconds, for tests).
# config.yaml uses the copy shipped in assets/miniworld_models/, made by this rule with seed 0.
rule build_miniworld_models:
    output:
        build_json="results/models/miniworld/{budget}_seed{seed}/build.json",
        cost=layout.job_cost_file("build_miniworld_models", layout.SHARED, "{budget}_seed{seed}"),
    log:
        "logs/build_miniworld_models/{budget}_seed{seed}.log",
    wildcard_constraints:
        budget="full|quick",
    params:
        job="datadream_core.models.build_miniworld_models:build_miniworld_models_job",
        budget=lambda wildcards: wildcards.budget,
        seed=lambda wildcards: int(wildcards.seed),
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


rule miniworld_models:
    input:
        "results/models/miniworld/full_seed0/build.json",


# `snakemake models`: fetch every model the config names into models.cache_dir and pin them
# (results/models/pins.json). A local rule: run it once where there is network; the jobs then stay offline.
MODEL_PINS = "results/models/pins.json"


rule fetch_models:
    output:
        pins_file=MODEL_PINS,
    log:
        "logs/fetch_models.log",
    params:
        job="datadream_core.models.fetch:fetch_models",
        online=True,  # the one job that downloads
        entries=models_in_config(config),
        cache_dir=config["models"]["cache_dir"],
    message:
        "fetch and pin the models: " + "; ".join(describe_model(entry) for entry in models_in_config(config))
    threads: 1
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule models:
    input:
        MODEL_PINS,


# The rehearsal's models (`make rehearse`, docs/rehearsal.md): every model of configs/paper.yaml at its real size
# with random weights, in the layouts their loaders read. configs/rehearsal.yaml names these paths; like
# `snakemake models`, it runs once before the workflow, whose jobs then find the models on disk.
REAL_SIZE_MODELS = "results/models/real_size"


rule real_size_models:
    output:
        sd=directory(f"{REAL_SIZE_MODELS}/sd"),
        clip=directory(f"{REAL_SIZE_MODELS}/clip_vit_b16"),
        disef_filter=directory(f"{REAL_SIZE_MODELS}/clip_vit_h14"),
        captioner=directory(f"{REAL_SIZE_MODELS}/blip_base"),
        inception=f"{REAL_SIZE_MODELS}/pt_inception_random.pth",
    log:
        "logs/real_size_models.log",
    params:
        job="datadream_core.models.architectures:build_real_size_models",
        seed=0,
    threads: 2
    resources:
        mem_mb=12000,
        runtime=30,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB
