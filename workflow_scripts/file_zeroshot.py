"""Snakemake adapter: file the dataset's one zero-shot evaluation under a (K, seed) run."""

from datadream_core.classify.zeroshot import file_zeroshot_for_run
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
metrics = file_zeroshot_for_run(snakemake.input.metrics, snakemake.input.per_class, int(snakemake.wildcards.shots),
                                int(snakemake.wildcards.seed), snakemake.output.metrics, snakemake.output.per_class)
log.info("zero-shot accuracy %.2f%% filed for k%s seed%s", metrics["accuracy"], snakemake.wildcards.shots,
         snakemake.wildcards.seed)
