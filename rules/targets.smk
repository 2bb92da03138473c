# Named targets: `snakemake fewshot`, `snakemake dataset_<name>`; the default `all` is in the Snakefile.


rule fewshot:
    input:
        expand("results/{dataset}/fewshot/seed{seed}.csv", dataset=DATASETS, seed=SEEDS),


for _dataset in DATASETS:

    rule:
        name:
            f"dataset_{_dataset}"
        input:
            dataset_files(_dataset),
