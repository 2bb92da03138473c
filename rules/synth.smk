# Generation: one job per (generator, dataset, shots, seed, class chunk, shard), merged into a manifest.
# Images land in .../c{class}/shard{j}/ whatever the chunking; the chunk CSV lists them.
# issynth and disef start from the K real shots (so they live under k{shots}); disef also needs the
# shots' captions (computed once per K and seed) and the classifier's base CLIP for its filter.

REAL_SHOT_GENERATORS = {"issynth", "disef"}


def captions_csv(dataset, shots, seed):
    return f"results/{dataset}/captions/k{shots}_seed{seed}.csv"


def captioner_input(wildcards):
    return [CAPTIONER_MARKER] if config["synth"]["captioner_build_tiny"] else []


def generation_fewshot(wildcards):
    if wildcards.generator in REAL_SHOT_GENERATORS:
        return [f"results/{wildcards.dataset}/fewshot/seed{wildcards.seed}.csv"]
    return []


def generation_captions(wildcards):
    if wildcards.generator == "disef":
        return [captions_csv(wildcards.dataset, wildcards.shots, wildcards.seed)]
    return []


def generation_filter_model(wildcards):
    return clip_model_input(wildcards) if wildcards.generator == "disef" else []


rule caption_shots:
    input:
        fewshot="results/{dataset}/fewshot/seed{seed}.csv",
        model=captioner_input,
    output:
        "results/{dataset}/captions/k{shots}_seed{seed}.csv",
    log:
        "logs/caption_shots/{dataset}/k{shots}_seed{seed}.log",
    params:
        shots=lambda wildcards: int(wildcards.shots),
    threads: config["threads"]["synth"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/caption_shots.py"


rule generate_chunk:
    input:
        classes="results/{dataset}/classes.csv",
        loras=generation_adapters,
        model=sd_model_input,
        fewshot=generation_fewshot,
        captions=generation_captions,
        filter_model=generation_filter_model,
    output:
        "results/{dataset}/synth/{generator}/k{shots}_seed{seed}/chunks/{chunk}_shard{shard}.csv",
    log:
        "logs/generate_chunk/{dataset}/{generator}/k{shots}_seed{seed}/{chunk}_shard{shard}.log",
    params:
        n_images=SYNTH_COUNT,
        synth_dir="results/{dataset}/synth/{generator}/k{shots}_seed{seed}",
    threads: config["threads"]["synth"]
    priority: 1
    resources:
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/generate_chunk.py"


rule merge_manifest:
    input:
        chunk_csvs,
    output:
        "results/{dataset}/synth/{generator}/k{shots}_seed{seed}/manifest.csv",
    log:
        "logs/merge_manifest/{dataset}/{generator}/k{shots}_seed{seed}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow_scripts/merge_manifest.py"
