"""Snakemake adapter: draw the nested few-shot list of one seed."""

from datadream_core.data.fewshot import sample_fewshot, write_fewshot
from datadream_core.data.table import read_classes, read_splits
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
shots = sample_fewshot(read_splits(snakemake.input.splits), read_classes(snakemake.input.classes),
                       snakemake.params.max_shots, int(snakemake.wildcards.seed))
write_fewshot(snakemake.output[0], shots)
log.info("wrote %d shots (%d per class)", len(shots), snakemake.params.max_shots)
