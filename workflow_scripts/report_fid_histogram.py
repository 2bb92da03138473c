"""Snakemake adapter: per-class FID histogram of one dataset, one series per generator (paper Fig. 4)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.figures import mean_per_class_fid, plot_fid_histograms  # noqa: E402

params = snakemake.params
per_class = {generator: mean_per_class_fid(snakemake.input[generator]) for generator in params.generators}
plot_fid_histograms(per_class, snakemake.wildcards.dataset, snakemake.output[0],
                    subtitle=f"{params.shots} shots, {params.features} features, real {params.split} split,"
                             f" mean over seeds {list(params.seeds)}")
