# Data stage: (render) -> index -> nested few-shot lists.


def dataset_entry(wildcards):
    """The dataset's `datasets:` entry as the readers see it; where its files are is output-neutral."""
    spec = DatasetSpec.from_config(config, wildcards.dataset)
    # num_classes only where set: an entry without it keeps the params, so finished runs are not redone
    subset = {"num_classes": spec.num_classes} if spec.num_classes else {}
    return canonical({"source": spec.source, "coop_name": spec.coop_name, "domain_word": spec.domain_word,
                      "class_names": spec.class_names, "split": spec.split, "world": spec.world, **subset})


def split_needs_of(wildcards):
    """What the config draws from each split, for the jobs that make the splits to check before any model job.
    Output-neutral: a check passes (the same outputs) or stops the run."""
    return OutputNeutral(split_needs(config, wildcards.dataset))


rule render_world:
    output:
        manifest=layout.world_manifest("{dataset}"),
        images=directory(layout.world_images("{dataset}")),
    log:
        "logs/render_world/{dataset}.log",
    params:
        job="datadream_core.data.miniworld:render_world_dataset",
        world=lambda wildcards: canonical(config["datasets"][wildcards.dataset]["world"]),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule index_dataset:
    input:
        world_input,
    output:
        classes=layout.classes_csv("{dataset}"),
        splits=layout.splits_csv("{dataset}"),
        problems=layout.problems_csv("{dataset}"),
        identity_json=layout.data_identity_json("{dataset}"),
    log:
        "logs/index_dataset/{dataset}.log",
    params:
        job="datadream_core.data.build:index_dataset_job",
        dataset=lambda wildcards: wildcards.dataset,
        entry=dataset_entry,
        root=lambda wildcards: OutputNeutral({"root": config["datasets"][wildcards.dataset].get("root")}),
        data_identity=lambda wildcards: data_identity(wildcards.dataset),
        prompt_template=lambda wildcards: config["prompt_template"],  # a function: "{name}" is no wildcard
        verify_images=config["data"]["verify_images"],
        max_megapixels=config["data"]["max_megapixels"],
        min_image_side=config["data"]["min_image_side"],
        needs=split_needs_of,
    threads: config["threads"]["data"]
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule sample_fewshot:
    input:
        classes=layout.classes_csv("{dataset}"),
        splits=layout.splits_csv("{dataset}"),
    output:
        fewshot=layout.fewshot_csv("{dataset}", "{seed}"),
    log:
        "logs/sample_fewshot/{dataset}_seed{seed}.log",
    params:
        job="datadream_core.data.fewshot:draw_fewshot_file",
        seed=lambda wildcards: int(wildcards.seed),
        max_shots=FEWSHOT_SIZE,
        needs=split_needs_of,
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


# A fabricated copy of a benchmark in CoOp's layout for the rehearsal (`make rehearse`, docs/rehearsal.md), which
# makes it before the workflow that reads it, as a real dataset is there before. DTD's photos are 300 to 640 px.
from datadream_core.data.sources import COOP_SPECS

ZHOU_BENCHMARKS = {spec.folder: name for name, spec in COOP_SPECS.items() if spec.split_file.startswith("split_zhou")}


rule fabricate_coop:
    output:
        folder=directory("results/fabricated/coop/{benchmark}"),
    log:
        "logs/fabricate_coop/{benchmark}.log",
    wildcard_constraints:
        benchmark="|".join(ZHOU_BENCHMARKS),
    params:
        job="datadream_core.data.fabricate:fabricate_zhou_benchmark",
        coop_name=lambda wildcards: ZHOU_BENCHMARKS[wildcards.benchmark],
        per_split={"train": 2, "val": 1, "test": 2},
        size=[500, 375],
        seed=0,
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB
