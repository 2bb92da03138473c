# Report: tables, figures and sample grids under results/summary/, each a report.html item with a caption.
# Tables and histograms use K = report.shots (default: the largest of `shots`); grids also the first seed.

REPORT = config["report"]
REPORT_SHOTS = REPORT["shots"] or max(SHOTS)
if REPORT_SHOTS not in set(SHOTS) | set(config["scaling"]["shots"]):
    raise ValueError(f"report.shots {REPORT_SHOTS} is in neither `shots` {SHOTS} nor `scaling.shots`: no runs have that K")
SCALING_N_SYNTH = sorted(set(config["scaling"]["n_synth"]) | {N_SYNTH})
SCALING_SHOTS = sorted(set(config["scaling"]["shots"]) | set(SHOTS))
TABLE_STEMS = ["table1_accuracy", "table2_comparison", "table_fid"]
# The train set kinds of the paper's classifier (LoRA), in config order: the rows of Table 1.
LORA_KINDS = config["classify"]["trainsets"]
# Table 2's few-shot baselines: the configured methods other than LoRA, on the real shots.
OTHER_METHODS = [method for method in config["classify"]["methods"] if method != "lora"]


def metrics_files(**runs):
    """metrics.json of `classifier_runs(**runs)`, LoRA's unless `methods` says otherwise."""
    return sorted(layout.classifier_metrics(*run) for run in classifier_runs(**{"methods": ["lora"], **runs}))


def paper_names():
    """Dataset key -> CoOp benchmark name, so that Table 2 can show the paper's numbers beside ours."""
    names = {}
    for dataset in DATASETS:
        spec = config["datasets"][dataset]
        names[dataset] = spec.get("coop_name", dataset) if spec["source"] == "coop" else None
    return names


def fid_summaries():
    return [layout.fid_summary(dataset, generator, REPORT_SHOTS, seed)
            for dataset in DATASETS for generator in GENERATORS for seed in SEEDS]


def fid_histogram_inputs(wildcards):
    """Each generator's per-class FID tables, one per seed, generator by generator."""
    return [layout.fid_per_class(wildcards.dataset, generator, REPORT_SHOTS, seed)
            for generator in GENERATORS for seed in SEEDS]


# Table 2's runs, drawn as training curves at the first seed.
CURVE_RUNS = ([(trainset, 0) for trainset in classifier_trainsets(config["classify"], GENERATORS, OTHER_METHODS, ["real"])]
              + [("real", 0)] * ("real" in LORA_KINDS)
              + [(f"real+synth_{g}", N_SYNTH) for g in GENERATORS if "real+synth" in LORA_KINDS])


def training_curve_inputs(wildcards):
    return [layout.classifier_metrics(wildcards.dataset, trainset, REPORT_SHOTS, SEEDS[0], n) for trainset, n in CURVE_RUNS]


def grid_inputs(wildcards):
    return {
        "classes_csv": layout.classes_csv(wildcards.dataset),
        "fewshot_csv": layout.fewshot_csv(wildcards.dataset, SEEDS[0]),
        "manifests": [layout.synth_manifest(wildcards.dataset, generator, REPORT_SHOTS, SEEDS[0])
                      for generator in GENERATORS],
    }


def table_targets():
    return [layout.summary_file(f"{stem}.{ext}") for stem in TABLE_STEMS for ext in ("csv", "md", "html")]


def figure_targets():
    figures = [layout.summary_file(f"figures/{kind}_{dataset}.png") for kind in ("fid_hist", "training_curves")
               for dataset in DATASETS]
    if config["scaling"]["n_synth"]:
        figures.append(layout.summary_file("figures/scaling_nsynth.png"))
    if config["scaling"]["shots"]:
        figures.append(layout.summary_file("figures/scaling_shots.png"))
    return figures


def grid_targets(dataset):
    return [layout.summary_file(f"grids/{dataset}.png")]


def trained_runs():
    """(dataset, trainset, shots, seed, n_synth) of every trained run, the scaling figures' too (their inputs
    less zero-shot, which trains nothing)."""
    scaling = dict(methods=["lora"], generators=SCALING_GENERATORS, datasets=SCALING_DATASETS)
    return sorted({run for run in classifier_runs() if parse_trainset(run[1]).trains}
                  | set(classifier_runs(kinds=["real", "synth", "real+synth"], shots=[REPORT_SHOTS],
                                        n_synth=SCALING_N_SYNTH, **scaling))
                  | set(classifier_runs(kinds=["real", "real+synth"], shots=SCALING_SHOTS, **scaling)))


def searched_runs():
    """metrics.json of every trained run: classify.search tuned each of them."""
    return [layout.classifier_metrics(*key) for key in trained_runs()]


def search_targets():
    """The classify.search grid's table; nothing without a search."""
    return [layout.summary_file(f"search_grid.{ext}") for ext in ("csv", "html")] if SEARCH_POINTS else []


COMPUTE_TABLE = {"csv_path": layout.summary_file("compute.csv"), "html_path": layout.summary_file("compute.html")}


def report_inputs():
    """Every file report.html shows."""
    return (table_targets() + figure_targets() + [path for dataset in DATASETS for path in grid_targets(dataset)]
            + search_targets() + list(COMPUTE_TABLE.values()))


def job_costs(wildcards):
    """The cost record of every model job this run plans, and no other: the compute table reads these."""
    costs = []
    for dataset in DATASETS:
        chunks = [chunk for of_dataset, chunk in chunks_of("dream") if of_dataset == dataset]
        for mode in config["dream"]["modes"]:
            costs += [path for shots in run_shots(dataset, f"datadream_{mode}") for seed in SEEDS
                      for path in ([dream_cost(mode, dataset, shots, seed)] if mode == "dset"
                                   else [dream_cost(mode, dataset, shots, seed, chunk) for chunk in chunks])]
        if "loft" in GENERATORS:
            costs += [image_cost(dataset, seed, chunk) for seed in SEEDS for chunk in chunks]
        runs = synth_runs(dataset)
        costs += [caption_cost(dataset, shots, seed) for generator, shots, seed in runs if generator == "disef"]
        costs += [generation_cost(dataset, *run, chunk, shard) for run in runs
                  for of_dataset, chunk in chunks_of("synth") if of_dataset == dataset for shard in range(n_shards(dataset))]
        fid = dataset_section(config, dataset, "fid")
        costs.append(fid_real_cost(dataset, fid["real_split"], fid["features"]))
        costs += [fid_cost(dataset, generator, shots, seed) for generator in GENERATORS for shots in SHOTS for seed in SEEDS]
        if "zeroshot" in config["classify"]["trainsets"]:
            costs.append(layout.job_cost_file("evaluate_zeroshot", dataset, "zeroshot"))
    for run in trained_runs():
        costs += [classifier_cost(*run, point) for point in SEARCH_POINTS] if SEARCH_POINTS else [classifier_cost(*run)]
    return sorted(set(costs))


# Sums the cost records of the planned model jobs (results/benchmarks/); see datadream_core/report/compute.py.
rule compute_table:
    input:
        records=job_costs,
    output:
        csv_path=COMPUTE_TABLE["csv_path"],
        html_path=report(
            COMPUTE_TABLE["html_path"],
            caption="../report/compute.rst",
            category="Compute",
            labels={"table": "wall time and memory per rule, dataset and stage"},
        ),
    log:
        "logs/report/compute_table.log",
    params:
        job="datadream_core.report.compute:write_compute_table",
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule table_accuracy:
    input:
        metrics=metrics_files(shots=[REPORT_SHOTS])
        + metrics_files(methods=OTHER_METHODS, kinds=["real"], shots=[REPORT_SHOTS]),
    output:
        table1_csv=layout.summary_file("table1_accuracy.csv"),
        table1_md=layout.summary_file("table1_accuracy.md"),
        table1_html=report(
            layout.summary_file("table1_accuracy.html"),
            caption="../report/table1.rst",
            category="Accuracy",
            labels={"table": "Table 1: accuracy per training set"},
        ),
        table2_csv=layout.summary_file("table2_comparison.csv"),
        table2_md=layout.summary_file("table2_comparison.md"),
        table2_html=report(
            layout.summary_file("table2_comparison.html"),
            caption="../report/table2.rst",
            category="Accuracy",
            labels={"table": "Table 2: real + synthetic compared"},
        ),
    log:
        "logs/report/table_accuracy.log",
    params:
        job="datadream_core.report.tables:write_accuracy_tables",
        datasets=DATASETS,
        generators=GENERATORS,
        trainsets=LORA_KINDS,
        seeds=SEEDS,
        shots=REPORT_SHOTS,
        n_synth=N_SYNTH,
        paper_names=paper_names(),
        methods=config["classify"]["methods"],
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule table_fid:
    input:
        summaries=fid_summaries(),
    output:
        csv_path=layout.summary_file("table_fid.csv"),
        markdown_path=layout.summary_file("table_fid.md"),
        html_path=report(
            layout.summary_file("table_fid.html"),
            caption="../report/fid_table.rst",
            category="FID",
            subcategory="Tables",
            labels={"table": "FID per generator and dataset"},
        ),
    log:
        "logs/report/table_fid.log",
    params:
        job="datadream_core.report.tables:write_fid_table",
        datasets=DATASETS,
        generators=GENERATORS,
        seeds=SEEDS,
        shots=REPORT_SHOTS,
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule fid_histogram:
    input:
        per_class=fid_histogram_inputs,
    output:
        png=report(
            layout.summary_file("figures/fid_hist_{dataset}.png"),
            caption="../report/fid_hist.rst",
            category="FID",
            subcategory="Per-class histograms",
            labels={"dataset": "{dataset}", "figure": "per-class FID histogram"},
        ),
    log:
        "logs/report/fid_histogram_{dataset}.log",
    params:
        job="datadream_core.report.figures:fid_histogram_figure",
        dataset=lambda wildcards: wildcards.dataset,
        generators=GENERATORS,
        seeds=SEEDS,
        shots=REPORT_SHOTS,
        features=config["fid"]["features"],
        split=config["fid"]["real_split"],
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule training_curves:
    input:
        metrics=training_curve_inputs,
    output:
        png=report(
            layout.summary_file("figures/training_curves_{dataset}.png"),
            caption="../report/training_curves.rst",
            category="Classifier training",
            labels={"dataset": "{dataset}", "figure": "training curves"},
        ),
    log:
        "logs/report/training_curves_{dataset}.log",
    params:
        job="datadream_core.report.figures:training_curves_figure",
        dataset=lambda wildcards: wildcards.dataset,
        trainsets=[trainset for trainset, _ in CURVE_RUNS],
        shots=REPORT_SHOTS,
        seed=SEEDS[0],
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule scaling_nsynth:
    input:
        metrics=metrics_files(shots=[REPORT_SHOTS], n_synth=SCALING_N_SYNTH, generators=SCALING_GENERATORS,
                              datasets=SCALING_DATASETS),
    output:
        png=report(
            layout.summary_file("figures/scaling_nsynth.png"),
            caption="../report/scaling_nsynth.rst",
            category="Scaling",
            labels={"figure": "accuracy vs synthetic images per class"},
        ),
    log:
        "logs/report/scaling_nsynth.log",
    params:
        job="datadream_core.report.figures:scaling_nsynth_figure",
        datasets=SCALING_DATASETS,
        generators=SCALING_GENERATORS,
        trainsets=LORA_KINDS,
        seeds=SEEDS,
        shots=REPORT_SHOTS,
        points=SCALING_N_SYNTH,
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule scaling_shots:
    input:
        metrics=metrics_files(kinds=["real", "real+synth"], shots=SCALING_SHOTS, generators=SCALING_GENERATORS,
                              datasets=SCALING_DATASETS)
        + metrics_files(kinds=["zeroshot"], shots=[REPORT_SHOTS], datasets=SCALING_DATASETS),
    output:
        png=report(
            layout.summary_file("figures/scaling_shots.png"),
            caption="../report/scaling_shots.rst",
            category="Scaling",
            labels={"figure": "accuracy vs real shots"},
        ),
    log:
        "logs/report/scaling_shots.log",
    params:
        job="datadream_core.report.figures:scaling_shots_figure",
        datasets=SCALING_DATASETS,
        generators=SCALING_GENERATORS,
        seeds=SEEDS,
        n_synth=N_SYNTH,
        points=SCALING_SHOTS,
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


rule sample_grid:
    input:
        unpack(grid_inputs),
    output:
        png=report(
            layout.summary_file("grids/{dataset}.png"),
            caption="../report/grid.rst",
            category="Samples",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/report/sample_grid_{dataset}.log",
    params:
        job="datadream_core.report.grids:sample_grid_figure",
        dataset=lambda wildcards: wildcards.dataset,
        generators=GENERATORS,
        shots=REPORT_SHOTS,
        seed=SEEDS[0],
        images_per_block=REPORT["grid_images"],
        max_classes=REPORT["grid_classes"],
    resources:
        **LIGHT_RESOURCES,
    conda:
        JOB_ENV
    script:
        LIGHT_JOB


if SEARCH_POINTS:

    localrules:
        search_grid,

    rule search_grid:
        input:
            paths=searched_runs(),
        output:
            csv_path=layout.summary_file("search_grid.csv"),
            html_path=report(
                layout.summary_file("search_grid.html"),
                caption="../report/search_grid.rst",
                category="Accuracy",
                labels={"table": "Classifier search: every grid point"},
            ),
        log:
            "logs/report/search_grid.log",
        params:
            job="datadream_core.report.search:write_search_grid",
            points=list(SEARCH_POINTS),
        conda:
            JOB_ENV
        script:
            LIGHT_JOB
