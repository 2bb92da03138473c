"""Snakemake adapter: caption the K real shots of every class once, for DISEF's prompts."""

import torch

from datadream_core.data.fewshot import read_fewshot
from datadream_core.jobs import start_job
from datadream_core.synth.captions import caption_shots

log = start_job(snakemake.log[0], snakemake.threads, outputs=snakemake.output, attempt=snakemake.resources.get("attempt", 1))
synth = snakemake.config["synth"]
shots = read_fewshot(snakemake.input.fewshot, snakemake.params.shots)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
count = caption_shots(shots, snakemake.output[0], synth["captioner"], batch_size=synth["caption_batch_size"],
                      max_new_tokens=synth["caption_max_tokens"], device=device)
log.info("captioned %d shots with %s", count, synth["captioner"])
