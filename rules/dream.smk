# DataDream: one LoRA per dataset (mode dset) or one per class (mode cls). Per-class adapters are trained in
# class chunks (dream.classes_per_job) to save job start-up; each chunk is a rule that declares every one of
# its classes' adapter files, so deleting one replans its chunk and what reads it.


def dream_params(wildcards):
    return stage_settings(wildcards.dataset, "dream")


def adapter_made_from(wildcards):
    """Provenance recorded in every adapter's train.json."""
    return {"settings_digest": digest(dream_params(wildcards)[0]), "model_identity": SD_IDENTITY,
            "data_identity": data_identity(wildcards.dataset)}


rule train_lora_dset:
    input:
        classes=layout.classes_csv("{dataset}"),
        fewshot=layout.fewshot_csv("{dataset}", "{seed}"),
        model=sd_model_input,
    output:
        layout.adapter_files("{dataset}", "dset", "{shots}", "{seed}"),
    log:
        "logs/train_lora/{dataset}/dset/k{shots}_seed{seed}.log",
    params:
        classes=OutputNeutral({"classes": None}),
        settings=lambda wildcards: dream_params(wildcards)[0],
        neutral=lambda wildcards: dream_params(wildcards)[1],
        made_from=adapter_made_from,
        sd_location=SD_LOCATION,
    threads: config["threads"]["lora"]
    priority: 2  # the longest chains (adapter -> images -> classifiers) start first
    resources:
        mem_mb=lambda wildcards, attempt: 24000 * attempt,
        runtime=lambda wildcards, attempt: 720 * attempt,
        gpu=1,
    script:
        "../workflow_scripts/train_lora.py"


for _chunk, _datasets in sorted(chunks_of("dream").items()):

    rule:
        name:
            chunk_rule_name("train_lora_cls", _chunk)
        input:
            classes=layout.classes_csv("{dataset}"),
            fewshot=layout.fewshot_csv("{dataset}", "{seed}"),
            model=sd_model_input,
        output:
            [path for index in chunk_classes(_chunk) for path in layout.adapter_files("{dataset}", "cls", "{shots}", "{seed}", index)],
        wildcard_constraints:
            dataset="|".join(_datasets),
        log:
            f"logs/train_lora/{{dataset}}/cls/k{{shots}}_seed{{seed}}/{_chunk}.log",
        params:
            classes=OutputNeutral({"classes": list(chunk_classes(_chunk))}),  # which classes, not how: see output
            settings=lambda wildcards: dream_params(wildcards)[0],
            neutral=lambda wildcards: dream_params(wildcards)[1],
            made_from=adapter_made_from,
            sd_location=SD_LOCATION,
        threads: config["threads"]["lora"]
        priority: 2
        resources:
            mem_mb=lambda wildcards, attempt: 24000 * attempt,
            runtime=lambda wildcards, attempt: 240 * attempt,
            gpu=1,
        script:
            "../workflow_scripts/train_lora.py"
