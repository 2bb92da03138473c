"""What the shipped profiles hand to every job: a user's cluster profile reaches the jobs whole."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO


def _profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def _planned_resources(work: Path, *profile_args: str) -> dict[str, list[dict[str, str]]]:
    """Dry-run the smoke config from `work` with the profiles given; every planned job's resources by rule."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text((REPO / "configs/smoke.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                             "--configfile", str(work / "config.yaml"), *profile_args, "-n"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    planned: dict[str, list[dict[str, str]]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if match := re.match(r"(?:local)?rule (\w+):", line):
            rule = match.group(1)
        elif match := re.match(r"\s+resources: (.*)", line):
            pairs = (item.split("=", 1) for item in match.group(1).split(", "))
            planned.setdefault(rule, []).append(dict(pairs))
    assert planned, result.stdout[-4000:]
    return planned


def test_the_workflow_profile_sets_no_default_resources():
    # Snakemake loads profiles/default beside any --profile, and a key it sets replaces the whole key of the user's
    # profile: default-resources here would drop a cluster's partition, account and memory defaults.
    assert "default-resources" not in _profile("default")
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime", "attempt"} <= set(_profile("slurm")["default-resources"])


@pytest.mark.e2e
def test_the_slurm_profile_reaches_every_job(tmp_path):
    slurm = _profile("slurm")["default-resources"]
    planned = _planned_resources(tmp_path / "work", "--profile", str(REPO / "profiles/slurm"))
    for rule, jobs in planned.items():
        for resources in jobs:
            assert resources["slurm_partition"] == slurm["slurm_partition"], (rule, resources)
            assert resources["attempt"] == "1" and "mem_mb" in resources and "runtime" in resources, (rule, resources)
    # a rule that sets no memory of its own gets the profile's
    assert {job["mem_mb"] for job in planned["file_zeroshot"]} == {str(slurm["mem_mb"])}


@pytest.mark.e2e
def test_a_site_profile_reaches_every_job(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "config.yaml").write_text(yaml.safe_dump({"default-resources": {"slurm_account": "my-lab", "mem_mb": 3000}}))
    planned = _planned_resources(tmp_path / "work", "--profile", str(site), "--cores", "2")
    assert all(job["slurm_account"] == "my-lab" for jobs in planned.values() for job in jobs)
    assert {job["mem_mb"] for job in planned["file_zeroshot"]} == {"3000"}
