"""Snakemake adapter: the compute table (wall time, CPU time, memory) of the planned model jobs' cost records."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.compute import write_compute_table  # noqa: E402

rows = write_compute_table(snakemake.input, snakemake.output.csv, snakemake.output.html)
log.info("compute table: %d rows", len(rows))
