# DataDream: one LoRA per dataset (mode dset) or one per class (mode cls, trained in class chunks).


rule train_lora_dset:
    input:
        classes="results/{dataset}/classes.csv",
        fewshot="results/{dataset}/fewshot/seed{seed}.csv",
        model=sd_model_input,
    output:
        "results/{dataset}/dream/dset/k{shots}_seed{seed}/all/pytorch_lora_weights.safetensors",
    log:
        "logs/train_lora/{dataset}/dset/k{shots}_seed{seed}.log",
    threads: config["threads"]["lora"]
    priority: 2  # the longest chains (adapter -> images -> classifiers) start first
    resources:
        mem_mb=lambda wildcards, attempt: 24000 * attempt,
        runtime=lambda wildcards, attempt: 720 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/train_lora.py"


rule train_lora_cls:
    input:
        classes="results/{dataset}/classes.csv",
        fewshot="results/{dataset}/fewshot/seed{seed}.csv",
        model=sd_model_input,
    output:
        "results/{dataset}/dream/cls/k{shots}_seed{seed}/chunks/{chunk}.json",
    log:
        "logs/train_lora/{dataset}/cls/k{shots}_seed{seed}/{chunk}.log",
    params:
        cls_dir="results/{dataset}/dream/cls/k{shots}_seed{seed}",
    threads: config["threads"]["lora"]
    priority: 2  # the longest chains (adapter -> images -> classifiers) start first
    resources:
        mem_mb=lambda wildcards, attempt: 24000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/train_lora.py"
