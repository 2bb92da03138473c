# Named targets: one per stage and one per dataset; the default `all` is in the Snakefile.
# The big ones list their files through an input function, called only when the target is planned, so that
# parsing the workflow (every cluster job does) builds none of paper.yaml's ~100k file objects.
from functools import partial


def dataset_targets(dataset):
    return (dataset_files(dataset) + lora_targets(dataset) + synth_targets(dataset)
            + classifier_targets(dataset) + fid_targets(dataset) + grid_targets(dataset))


def when_planned(files):
    return lambda wildcards: files()


def of_every_dataset(targets):
    return lambda: [path for dataset in DATASETS for path in targets(dataset)]


rule fewshot:
    input:
        [layout.fewshot_csv(dataset, seed) for dataset in DATASETS for seed in SEEDS],


rule loras:
    input:
        when_planned(of_every_dataset(lora_targets)),


rule synth:
    input:
        when_planned(of_every_dataset(synth_targets)),


rule classifiers:
    input:
        when_planned(of_every_dataset(classifier_targets)),


rule fid:
    input:
        when_planned(of_every_dataset(fid_targets)),


rule tables:
    input:
        table_targets(),


rule report_inputs:
    input:
        report_inputs(),


for _dataset in DATASETS:

    rule:
        name:
            f"dataset_{_dataset}"
        input:
            when_planned(partial(dataset_targets, _dataset)),
