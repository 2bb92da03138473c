# Generation: one job per (generator, dataset, shots, seed, class chunk, shard), merged into a manifest.
# Images land in .../c{class}/shard{j}/ whatever the chunking; the chunk CSV lists them.


rule generate_chunk:
    input:
        classes="results/{dataset}/classes.csv",
        loras=generation_adapters,
        model=sd_model_input,
    output:
        "results/{dataset}/synth/{generator}/k{shots}_seed{seed}/chunks/{chunk}_shard{shard}.csv",
    log:
        "logs/generate_chunk/{dataset}/{generator}/k{shots}_seed{seed}/{chunk}_shard{shard}.log",
    params:
        n_images=SYNTH_COUNT,
        synth_dir="results/{dataset}/synth/{generator}/k{shots}_seed{seed}",
    threads: 2
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
