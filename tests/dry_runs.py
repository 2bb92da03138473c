"""Dry runs (`snakemake -n`) of the real workflow, read back as the jobs Snakemake plans: the cache tests' probe."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from conftest import REPO

TARGET_RULES = {"all", "fewshot", "loras", "synth", "classifiers", "fid", "tables", "report_inputs"}


def rule_family(name: str) -> str:
    """Chunk rules (train_lora_cls_c0000_c0002_miniworld, generate_c0000_c0002_miniworld) by their family."""
    return re.sub(r"_c\d{4}_c\d{4}_\w+$", "", name)


def planned_jobs(workdir: Path, config: dict, *args: str) -> list[tuple[str, dict]]:
    """(rule family, wildcards) of every job a dry run plans, target rules (all, fewshot, ...) left out."""
    workdir.mkdir(parents=True, exist_ok=True)
    # a file of its own: tests on other workers dry-run the shared smoke run at the same time
    handle, config_path = tempfile.mkstemp(suffix=".yaml", prefix="dry_run_config.")
    with os.fdopen(handle, "w", encoding="utf-8") as config_file:
        config_file.write(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config_path), "--cores", "2", "-n", *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.unlink(config_path)
    assert result.returncode == 0, f"dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    jobs, current = [], None
    for line in result.stdout.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if header:
            current = (rule_family(header.group(1)), {})
            if current[0] not in TARGET_RULES and not current[0].startswith("dataset_"):
                jobs.append(current)
        elif current and line.strip().startswith("wildcards:"):
            pairs = line.strip()[len("wildcards:"):].split(",")
            current[1].update(pair.strip().split("=", 1) for pair in pairs if "=" in pair)
    return jobs


def planned_rules(workdir: Path, config: dict, *args: str) -> set[str]:
    return {rule for rule, _ in planned_jobs(workdir, config, *args)}


def changed(config: dict, path: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, key = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    return config
