"""Snakemake adapter: merge the shards of one generator/dataset/shots/seed into its manifest."""

from datadream_core.jobs import start_snakemake_job
from datadream_core.synth.manifest import merge_manifest

log = start_snakemake_job(snakemake)
count = merge_manifest(snakemake.input, snakemake.output[0])
log.info("manifest lists %d images", count)
