"""Snakemake adapter: accuracy against synthetic images per class or against real shots (paper Fig. 5)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.figures import plot_accuracy_vs_nsynth, plot_accuracy_vs_shots  # noqa: E402
from datadream_core.report.tables import read_runs  # noqa: E402

params = snakemake.params
runs = read_runs(snakemake.input)
if params.axis == "n_synth":
    plot_accuracy_vs_nsynth(runs, params.datasets, params.generators, params.trainsets, params.seeds, params.shots,
                            params.points, snakemake.output[0])
else:
    plot_accuracy_vs_shots(runs, params.datasets, params.generators, params.seeds, params.points, params.n_synth,
                           snakemake.output[0])
