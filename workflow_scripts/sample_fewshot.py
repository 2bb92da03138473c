"""Snakemake adapter: draw the nested few-shot list of one seed."""

from datadream_core.data.fewshot import draw_fewshot, write_fewshot
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
shots = draw_fewshot(snakemake.input.classes, snakemake.input.splits, snakemake.params.max_shots,
                     int(snakemake.wildcards.seed), snakemake.params.needs.values["needs"])
write_fewshot(snakemake.output[0], shots)
log.info("wrote %d shots (%d per class)", len(shots), snakemake.params.max_shots)
