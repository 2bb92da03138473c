"""Snakemake adapter: fetch every model the config names (the one job allowed to go online) and pin them."""

from datadream_core.jobs import start_job
from datadream_core.models.fetch import fetch_models

log = start_job(snakemake.log[0], snakemake.threads, offline=False)
pins = fetch_models(snakemake.params.models, snakemake.output[0], snakemake.params.cache_dir)
log.info("%d models pinned in %s", len(pins), snakemake.output[0])
