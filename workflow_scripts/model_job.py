"""Every model rule's script: runs the rule's job function (params.job) as this job, forked from a warm
interpreter where `make run` started one, and records the job's own wall time, CPU time and peak memory in its
`cost` output (datadream_core/warm_start.py)."""

from datadream_core.warm_start import run_model_job

run_model_job(snakemake)
