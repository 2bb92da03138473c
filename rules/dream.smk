# DataDream: one LoRA per dataset (mode dset, scope "all") or per class (mode cls, scope c0000...).


rule train_lora:
    input:
        classes="results/{dataset}/classes.csv",
        fewshot="results/{dataset}/fewshot/seed{seed}.csv",
        model=sd_model_input,
    output:
        "results/{dataset}/dream/{mode}/k{shots}_seed{seed}/{scope}/pytorch_lora_weights.safetensors",
    log:
        "logs/train_lora/{dataset}/{mode}/k{shots}_seed{seed}/{scope}.log",
    threads: 2
    resources:
        mem_mb=lambda wildcards, attempt: 24000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/train_lora.py"
