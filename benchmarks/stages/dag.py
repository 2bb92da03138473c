"""DAG planning: `snakemake -n` of configs/paper.yaml, with no reference path."""

from __future__ import annotations

import subprocess
import sys

import torch

from benchmarks.harness import time_once
from benchmarks.stages.common import REPO, Context


def stage_dag(ctx: Context) -> list[dict]:
    import re

    workdir = ctx.dir("dag")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "configs" / "paper.yaml"), "-n", "--quiet", "rules", "--cores", "2"]

    def plan():
        done = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
        if done.returncode:
            raise RuntimeError(f"snakemake -n failed ({done.returncode}): {done.stderr[-2000:]}")
        found = re.search(r"^total\s+(\d+)", done.stdout, re.MULTILINE)
        return int(found.group(1)) if found else None

    def import_slurm_plugin():
        # Snakemake imports every executor plugin; where SLURM's client tools are installed the SLURM plugin
        # asks `scontrol show config` for MinJobAge at import, which waits ~9 s when no slurmctld answers.
        subprocess.run([sys.executable, "-c", "import snakemake_executor_plugin_slurm"], check=True)

    times, jobs = time_once(plan, ctx.work.dag_reps, torch.device("cpu"))
    probe, _ = time_once(import_slurm_plugin, ctx.work.dag_reps, torch.device("cpu"))
    import statistics

    median, probe_median = statistics.median(times), statistics.median(probe)
    return [{"stage": "DAG planning (paper.yaml, snakemake -n)", "unit": "s", "ours_median_s": median,
             "ours_s": times, "reference_median_s": None, "speedup": None, "jobs": jobs, "outputs_equal": None,
             "slurm_plugin_import_s": probe, "planning_without_plugin_import_s": median - probe_median,
             "equal_text": f"{jobs} jobs; {probe_median:.1f} s of it is importing the SLURM plugin (no reference)",
             "work": {"config": "configs/paper.yaml"}}]
