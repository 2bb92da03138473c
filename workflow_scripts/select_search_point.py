"""Snakemake adapter: file the search point with the best validation accuracy as the run's result."""

from datadream_core.classify.search import select_search_point
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
points = snakemake.params.points
chosen = select_search_point(dict(zip(points, snakemake.input.metrics)), dict(zip(points, snakemake.input.per_class)),
                             snakemake.output.metrics, snakemake.output.per_class)
log.info("search: chose %s (val %.2f%%)", chosen["search_choice"], chosen["selected_val_accuracy"])
