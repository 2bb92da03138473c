# DataDream: one LoRA per dataset (mode dset) or one per class (mode cls). Per-class adapters are trained in
# class chunks (dream.classes_per_job) to save job start-up; each chunk is a rule that declares every one of
# its classes' adapter files, so deleting one replans its chunk and what reads it. LoFT (generator loft) trains
# one small adapter per real shot, in the same class chunks: each chunk declares every shot's adapter files.


TRAIN_LORA_JOB = "datadream_core.dream:train_lora_job"


def owned_adapter_folders(wildcards, output):
    """The adapter folders a training job writes whole: cleaned of what a killed run left, with its outputs."""
    return layout.adapter_folders(output.adapters)


def dream_settings(mode):
    """The dream settings of one adapter kind as a dataset runs them (datadream_core.config.dream_mode_settings)."""
    return lambda dataset, wildcards: JobSettings(dream_mode_settings(job_section(config, dataset, "dream"), mode),
                                                  SPEED_ONLY_KEYS["dream"])


def dream_cost(mode, dataset, shots, seed, chunk=None):
    """The cost record of a DataDream training job: the dataset-wide adapter (dset) or a class chunk's (cls)."""
    return layout.job_cost_file(f"train_lora_{mode}", dataset, f"k{shots}_seed{seed}" + (f"/{chunk}" if chunk else ""))


def image_cost(dataset, seed, chunk):
    """The cost record of a LoFT job: the per-image adapters of a class chunk."""
    return layout.job_cost_file("train_lora_image", dataset, f"seed{seed}/{chunk}")


rule train_lora_dset:
    input:
        sd_model_input,
        classes_csv=layout.classes_csv("{dataset}"),
        fewshot_csv=layout.fewshot_csv("{dataset}", "{seed}"),
        identity=layout.data_identity_json("{dataset}"),
    output:
        adapters=layout.adapter_files("{dataset}", "dset", "{shots}", "{seed}"),
        cost=dream_cost("dset", "{dataset}", "{shots}", "{seed}"),
    log:
        "logs/train_lora/{dataset}/dset/k{shots}_seed{seed}.log",
    params:
        job=TRAIN_LORA_JOB,
        owned=owned_adapter_folders,
        classes=OutputNeutral(None),
        shots=lambda wildcards: int(wildcards.shots),
        seed=lambda wildcards: int(wildcards.seed),
        **settings_params(dream_settings("dset"), model=SD_IDENTITY),
        sd_location=SD_LOCATION,
    threads: config["threads"]["lora"]
    priority: 2  # the longest chains (adapter -> images -> classifiers) start first
    resources:
        mem_mb=memory_ask("train_lora_dset"),
        runtime=lambda wildcards, attempt: 720 * attempt,
        gpu=1,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


for _dataset, _chunk in chunks_of("dream"):

    rule:
        name:
            chunk_rule_name("train_lora_cls", _dataset, _chunk)
        input:
            sd_model_input,
            classes_csv=layout.classes_csv(_dataset),
            fewshot_csv=layout.fewshot_csv(_dataset, "{seed}"),
            identity=layout.data_identity_json(_dataset),
        output:
            adapters=[path for index in chunk_classes(_chunk)
                      for path in layout.adapter_files(_dataset, "cls", "{shots}", "{seed}", index)],
            cost=dream_cost("cls", _dataset, "{shots}", "{seed}", _chunk),
        log:
            f"logs/train_lora/{_dataset}/cls/k{{shots}}_seed{{seed}}/{_chunk}.log",
        params:
            job=TRAIN_LORA_JOB,
            owned=owned_adapter_folders,
            classes=OutputNeutral(list(chunk_classes(_chunk))),  # named by the outputs
            shots=lambda wildcards: int(wildcards.shots),
            seed=lambda wildcards: int(wildcards.seed),
            **settings_params(dream_settings("cls"), model=SD_IDENTITY, dataset=_dataset),
            sd_location=SD_LOCATION,
        threads: config["threads"]["lora"]
        priority: 2
        resources:
            mem_mb=memory_ask("train_lora_cls"),
            runtime=lambda wildcards, attempt: 240 * attempt,
            gpu=1,
        conda:
            JOB_ENV
        script:
            MODEL_JOB


if "loft" in GENERATORS:
    for _dataset, _chunk in chunks_of("dream"):

        rule:
            name:
                chunk_rule_name("train_lora_image", _dataset, _chunk)
            input:
                sd_model_input,
                classes_csv=layout.classes_csv(_dataset),
                fewshot_csv=layout.fewshot_csv(_dataset, "{seed}"),
                identity=layout.data_identity_json(_dataset),
            output:
                adapters=[path for index in chunk_classes(_chunk) for rank in range(FEWSHOT_SIZE)
                          for path in layout.image_adapter_files(_dataset, "{seed}", index, rank)],
                cost=image_cost(_dataset, "{seed}", _chunk),
            log:
                f"logs/train_lora/{_dataset}/image/seed{{seed}}/{_chunk}.log",
            params:
                job=TRAIN_LORA_JOB,
                owned=owned_adapter_folders,
                # which adapters, not how: see output
                classes=OutputNeutral(list(chunk_classes(_chunk))),
                shots_per_class=OutputNeutral(FEWSHOT_SIZE),
                seed=lambda wildcards: int(wildcards.seed),
                **settings_params(dream_settings("loft"), model=SD_IDENTITY, dataset=_dataset),
                sd_location=SD_LOCATION,
            threads: config["threads"]["lora"]
            priority: 2
            resources:
                mem_mb=memory_ask("train_lora_image"),
                runtime=lambda wildcards, attempt: 1440 * attempt,  # 25 classes x 16 shots x 600 steps: ~14 h (README)
                gpu=1,
            conda:
                JOB_ENV
            script:
                MODEL_JOB
