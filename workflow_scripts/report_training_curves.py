"""Snakemake adapter: training loss and validation accuracy per optimiser step of one dataset's Table 2 runs."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.io import read_json  # noqa: E402
from datadream_core.report.figures import plot_training_curves  # noqa: E402
from datadream_core.report.tables import comparison_label  # noqa: E402

params = snakemake.params
runs = {comparison_label(trainset): read_json(path) for trainset, path in zip(params.trainsets, snakemake.input)}
plot_training_curves(runs, f"{snakemake.wildcards.dataset}: classifier training, {params.shots} shots, seed {params.seed}"
                     " (star: the epoch selected on validation)", snakemake.output[0])
