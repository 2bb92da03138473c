"""Snakemake adapter: write a fabricated copy of a benchmark in CoOp's layout (the rehearsal's dataset)."""

from datadream_core.data.fabricate import fabricate_zhou_benchmark
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
params = snakemake.params
fabricate_zhou_benchmark(snakemake.output[0], params.coop_name, params.per_split, tuple(params.size), params.seed)
log.info("fabricated %s in CoOp's layout at %s", params.coop_name, snakemake.output[0])
