"""Snakemake adapter: build every model of the paper's setting at its real size with random weights."""

from datadream_core.jobs import start_snakemake_job
from datadream_core.models.architectures import build_real_size_models

log = start_snakemake_job(snakemake)
build_real_size_models(**dict(snakemake.output.items()), seed=snakemake.params.seed)
log.info("built the real-size models with random weights: %s", ", ".join(snakemake.output))
