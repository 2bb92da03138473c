# Named targets: one per stage and one per dataset; the default `all` is in the Snakefile.


def dataset_targets(dataset):
    return (dataset_files(dataset) + lora_targets(dataset) + synth_targets(dataset) + classifier_targets(dataset)
            + fid_targets(dataset) + grid_targets(dataset))


rule fewshot:
    input:
        [layout.fewshot_csv(dataset, seed) for dataset in DATASETS for seed in SEEDS],


rule loras:
    input:
        [lora_targets(dataset) for dataset in DATASETS],


rule synth:
    input:
        [synth_targets(dataset) for dataset in DATASETS],


rule classifiers:
    input:
        [classifier_targets(dataset) for dataset in DATASETS],


rule fid:
    input:
        [fid_targets(dataset) for dataset in DATASETS],


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
            dataset_targets(_dataset),
