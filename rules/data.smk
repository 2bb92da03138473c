# Data stage: (render) -> index -> nested few-shot lists.


rule render_world:
    output:
        "results/{dataset}/world/manifest.csv",
    log:
        "logs/render_world/{dataset}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow_scripts/render_world.py"


rule index_dataset:
    input:
        world_input,
    output:
        classes="results/{dataset}/classes.csv",
        splits="results/{dataset}/splits.csv",
        problems="results/{dataset}/problems.csv",
    log:
        "logs/index_dataset/{dataset}.log",
    threads: config["threads"]["data"]
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../workflow_scripts/index_dataset.py"


rule sample_fewshot:
    input:
        classes="results/{dataset}/classes.csv",
        splits="results/{dataset}/splits.csv",
    output:
        "results/{dataset}/fewshot/seed{seed}.csv",
    log:
        "logs/sample_fewshot/{dataset}_seed{seed}.log",
    params:
        max_shots=FEWSHOT_SIZE,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow_scripts/sample_fewshot.py"
