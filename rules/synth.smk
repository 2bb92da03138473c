# Generation: one job per (generator, dataset, shots, seed, class chunk, shard), merged into a manifest; one rule
# per (dataset, class chunk, shard). loft reads each class's first K per-image adapters (rules/dream.smk).
# Images land in synth/c{class}/{generator}/k{K}_seed{s}/shard{j}/ whatever the chunking; each class's shard
# folder is a declared output.
# issynth and disef start from the K real shots (so they live under k{shots}); disef also needs the shots'
# captions (computed once per K and seed) and a CLIP for its filter.

# The synth keys each generator's images depend on (besides the model and its inputs).
SAMPLING_KEYS = ("steps", "guidance_scale", "scheduler", "mixed_precision", "shard_size")
GENERATOR_KEYS = {
    "sd": SAMPLING_KEYS,
    "datadream_dset": SAMPLING_KEYS,
    "datadream_cls": SAMPLING_KEYS,
    "issynth": SAMPLING_KEYS + ("issynth_strength",),
    "disef": SAMPLING_KEYS + ("disef_strength", "disef_steps", "disef_guidance_scale", "disef_max_attempts"),
    "loft": SAMPLING_KEYS + ("loft_interpolation_weight",),
}
CAPTION_KEYS = ("caption_max_tokens", "caption_batch_size")


def synth_settings(dataset, determining, **more):
    """The dataset's synth section and `more`; only the `determining` keys and `more` can change the outputs."""
    values = {**job_section(config, dataset, "synth"), **more}
    return JobSettings(values, set(values) - set(determining) - set(more))


def generation_settings(dataset, wildcards):
    return synth_settings(dataset, GENERATOR_KEYS[wildcards.generator], n_images=SYNTH_COUNT)


def caption_settings(dataset, wildcards):
    return synth_settings(dataset, CAPTION_KEYS)


def captioner_input(wildcards):
    return [CAPTIONER_MARKER] if config["synth"]["captioner_build_tiny"] else []


def generation_adapters(chunk):
    """The adapter weights a DataDream or LoFT generation chunk needs (none for the other generators), in class
    order; LoFT's are each class's K per-image adapters in rank order."""

    def adapters(wildcards):
        if wildcards.generator == "datadream_dset":
            return [layout.adapter_files(wildcards.dataset, "dset", wildcards.shots, wildcards.seed)[0]]
        if wildcards.generator == "datadream_cls":
            return [layout.adapter_files(wildcards.dataset, "cls", wildcards.shots, wildcards.seed, index)[0]
                    for index in chunk_classes(chunk)]
        if wildcards.generator == "loft":
            return [layout.image_adapter_files(wildcards.dataset, wildcards.seed, index, rank)[0]
                    for index in chunk_classes(chunk) for rank in range(int(wildcards.shots))]
        return []

    return adapters


def generation_shot_inputs(wildcards):
    """The real shots that img2img generators start from, and disef's captions of them; none for the others."""
    files = {}
    if wildcards.generator in layout.REAL_SHOT_GENERATORS:
        files["fewshot_csv"] = layout.fewshot_csv(wildcards.dataset, wildcards.seed)
    if wildcards.generator == "disef":
        files["captions_csv"] = layout.captions_csv(wildcards.dataset, wildcards.shots, wildcards.seed)
    return files


def generation_filter_model(wildcards):
    return clip_model_input(wildcards) if wildcards.generator == "disef" and DISEF_FILTER is None else []


DISEF_FILTER = config["synth"]["disef_filter"]  # null: the classifier's CLIP
FILTER_CLIP_LOCATION = OutputNeutral(dict(DISEF_FILTER)) if DISEF_FILTER else CLIP_LOCATION


@lru_cache(maxsize=None)
def filter_clip_identity():
    if DISEF_FILTER is None:
        return CLIP_IDENTITY
    return clip_identity(DISEF_FILTER["name"], DISEF_FILTER["pretrained"], _DIGESTS)


def filter_clip(wildcards):
    return {"identity": filter_clip_identity()} if wildcards.generator == "disef" else None


def caption_cost(dataset, shots, seed):
    return layout.job_cost_file("caption_shots", dataset, f"k{shots}_seed{seed}")


def generation_cost(dataset, generator, shots, seed, chunk, shard):
    return layout.job_cost_file("generate", dataset, f"{generator}/k{shots}_seed{seed}/{chunk}_shard{shard:03d}")


def shard_dirs(dataset, generator, shots, seed):
    shards = range(n_shards(dataset))  # once, not once per class: planning paper.yaml calls this ~600 times
    return [layout.shard_dir(dataset, generator, shots, seed, index, shard)
            for index in range(CLASS_COUNT[dataset]) for shard in shards]


rule caption_shots:
    input:
        captioner_input,
        fewshot_csv=layout.fewshot_csv("{dataset}", "{seed}"),
    output:
        captions_csv=layout.captions_csv("{dataset}", "{shots}", "{seed}"),
        cost=caption_cost("{dataset}", "{shots}", "{seed}"),
    log:
        "logs/caption_shots/{dataset}/k{shots}_seed{seed}.log",
    params:
        job="datadream_core.synth.captions:caption_shots_job",
        shots=lambda wildcards: int(wildcards.shots),
        **settings_params(caption_settings),
        captioner=lambda wildcards: captioner_identity(),
    threads: config["threads"]["synth"]
    resources:
        mem_mb=memory_ask("caption_shots"),
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=1,
    conda:
        JOB_ENV
    script:
        MODEL_JOB


for _dataset, _chunk in chunks_of("synth"):
    # one rule per shard too: output paths that end in a constant keep Snakemake's output index selective
    for _shard in range(n_shards(_dataset)):

        rule:
            name:
                chunk_rule_name("generate", _dataset, f"{_chunk}_s{_shard:03d}")
            input:
                sd_model_input,
                generation_filter_model,
                unpack(for_dataset(generation_shot_inputs, _dataset)),
                classes_csv=layout.classes_csv(_dataset),
                identity=layout.data_identity_json(_dataset),
                adapter_weights=for_dataset(generation_adapters(_chunk), _dataset),
            output:
                shard_dirs=[directory(layout.shard_dir(_dataset, "{generator}", "{shots}", "{seed}", index, _shard))
                        for index in chunk_classes(_chunk)],
                cost=generation_cost(_dataset, "{generator}", "{shots}", "{seed}", _chunk, _shard),
            log:
                f"logs/generate/{_dataset}/{{generator}}/k{{shots}}_seed{{seed}}/{_chunk}_shard{_shard:03d}.log",
            params:
                job="datadream_core.synth.generate:run_generation_job",
                generator=lambda wildcards: wildcards.generator,
                shots=lambda wildcards: int(wildcards.shots),
                seed=lambda wildcards: int(wildcards.seed),
                classes=OutputNeutral(list(chunk_classes(_chunk))),  # named by the outputs
                shard=OutputNeutral(_shard),
                **settings_params(generation_settings, model=SD_IDENTITY, dataset=_dataset),
                filter_clip=filter_clip,
                sd_location=SD_LOCATION,
                filter_clip_location=FILTER_CLIP_LOCATION,
            threads: config["threads"]["synth"]
            priority: 1
            resources:
                mem_mb=memory_ask("generate"),
                runtime=lambda wildcards, attempt: 240 * attempt,
                gpu=1,
            conda:
                JOB_ENV
            script:
                MODEL_JOB


rule merge_manifest:
    input:
        shard_dirs=lambda wildcards: shard_dirs(wildcards.dataset, wildcards.generator, wildcards.shots, wildcards.seed),
    output:
        manifest=layout.synth_manifest("{dataset}", "{generator}", "{shots}", "{seed}"),
    log:
        "logs/merge_manifest/{dataset}/{generator}/k{shots}_seed{seed}.log",
    params:
        job="datadream_core.synth.manifest:merge_manifest",
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB
