"""Snakemake adapter: the FID table (mean per-class and dataset-level FID per generator and dataset)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.tables import fid_table, read_fid_summaries, write_table  # noqa: E402

params = snakemake.params
table = fid_table(read_fid_summaries(snakemake.input), params.datasets, params.generators, params.seeds, params.shots)
write_table(table, snakemake.output.csv, snakemake.output.md, snakemake.output.html)
