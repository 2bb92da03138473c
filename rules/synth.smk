# Generation: one job per (generator, dataset, shots, seed, class, shard), merged into a manifest.


rule generate_shard:
    input:
        classes="results/{dataset}/classes.csv",
        lora=lora_input,
        model=sd_model_input,
    output:
        "results/{dataset}/synth/{generator}/k{shots}_seed{seed}/c{cls}/shard{shard}/shard.csv",
    log:
        "logs/generate_shard/{dataset}/{generator}/k{shots}_seed{seed}/c{cls}_shard{shard}.log",
    params:
        n_images=SYNTH_COUNT,
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/generate_shard.py"


rule merge_manifest:
    input:
        shard_csvs,
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
