"""Snakemake adapter: train the miniature world's base models (VAE + SD, CLIP) from a seed."""

from pathlib import Path

from datadream_core.jobs import start_snakemake_job
from datadream_core.models.build_miniworld_models import DEFAULT_BUDGET, QUICK_BUDGET, build_miniworld_models

log = start_snakemake_job(snakemake)
budget = QUICK_BUDGET if snakemake.wildcards.budget == "quick" else DEFAULT_BUDGET
report = build_miniworld_models(Path(snakemake.output[0]).parent, int(snakemake.wildcards.seed), budget, snakemake.threads)
log.info("miniworld base models built in %.0f s: %s", report["wall_seconds"]["total_this_run"], report["wall_seconds"])
