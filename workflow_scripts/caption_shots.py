"""Snakemake adapter: caption the K real shots of every class once, for DISEF's prompts."""

import torch

from datadream_core.data.fewshot import read_fewshot
from datadream_core.jobs import start_snakemake_job
from datadream_core.synth.captions import caption_shots

log = start_snakemake_job(snakemake)
settings = snakemake.params.settings
shots = read_fewshot(snakemake.input.fewshot, snakemake.params.shots)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
count = caption_shots(shots, snakemake.output[0], settings["captioner"], batch_size=settings["caption_batch_size"],
                      max_new_tokens=settings["caption_max_tokens"], device=device)
log.info("captioned %d shots with %s (%s)", count, settings["captioner"], snakemake.params.captioner)
