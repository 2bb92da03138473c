"""Every light rule's script: runs the rule's job function (params.job) in this process (datadream_core/jobs.py)."""

from datadream_core.jobs import run_snakemake_job

run_snakemake_job(snakemake)
