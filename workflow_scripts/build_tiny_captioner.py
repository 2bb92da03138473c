"""Snakemake adapter: build a tiny randomly initialised BLIP captioner folder (synth.captioner_build_tiny)."""

from pathlib import Path

from datadream_core.jobs import start_snakemake_job
from datadream_core.models.tiny import build_tiny_captioner

log = start_snakemake_job(snakemake)
folder = Path(snakemake.output[0]).parent
build_tiny_captioner(folder, seed=0)
log.info("built tiny captioner in %s", folder)
