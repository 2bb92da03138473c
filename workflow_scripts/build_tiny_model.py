"""Snakemake adapter: build a tiny randomly initialised Stable Diffusion or CLIP folder."""

from pathlib import Path

from datadream_core.jobs import start_snakemake_job
from datadream_core.models.tiny import build_tiny_clip, build_tiny_sd

log = start_snakemake_job(snakemake)
folder = Path(snakemake.output[0]).parent
(build_tiny_sd if snakemake.params.kind == "sd" else build_tiny_clip)(folder, seed=0)
log.info("built tiny %s model in %s", snakemake.params.kind, folder)
