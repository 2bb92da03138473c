"""Snakemake adapter: the classifier search's grid (every point's validation and test accuracy, the choice marked)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.report.search import write_search_grid  # noqa: E402

runs = write_search_grid(snakemake.input, snakemake.params.points, snakemake.output.csv, snakemake.output.html)
log.info("search grid of %d runs over %d points", len(runs), len(snakemake.params.points))
