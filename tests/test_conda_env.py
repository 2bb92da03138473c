"""envs/datadream.yaml: every script job names it, its pins are constraints.txt's, and `--sdm conda` uses it."""

import re
import shutil
import tomllib

import pytest
import yaml
from conftest import REPO, run_snakemake

ENV_FILE = REPO / "envs/datadream.yaml"
# Checked on this project's machines (PyPI and Debian reachable, conda-forge not: its host does not resolve):
# PyPI's `conda` has only yanked releases, the newest (4.3.16, 2017) an sdist that fails to build on Python
# 3.11; `micromamba` is not on PyPI; PyPI's `mamba` is an unrelated test runner; Debian packages no conda,
# mamba or micromamba (`apt-cache search` finds only conda-package-handling and conda-package-streaming).
# Snakemake runs `conda info` even to plan with `--sdm conda`, so both tests need a real frontend.
NO_CONDA = ("no conda or mamba executable, and none installable from PyPI or Debian (conda: yanked stub that "
            "does not build; micromamba: not on PyPI; mamba on PyPI: an unrelated test runner)")
needs_conda = pytest.mark.skipif(shutil.which("conda") is None and shutil.which("mamba") is None, reason=NO_CONDA)


def _pip_section() -> list[str]:
    env = yaml.safe_load(ENV_FILE.read_text())
    return [line.strip() for line in next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))]


def _pins(lines):
    return sorted(line.strip() for line in lines if re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s]+", line.strip()))


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower().replace("_", "-")


def test_environment_pins_are_the_constraints():
    constraints = _pins((REPO / "constraints.txt").read_text().splitlines())
    assert _pins(_pip_section()) == constraints and len(constraints) >= 9
    assert "python=3.11" in yaml.safe_load(ENV_FILE.read_text())["dependencies"]


def test_environment_holds_every_dependency_of_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert {_name(dep) for dep in project["dependencies"]} == {_name(line) for line in _pip_section()}


def test_every_script_rule_runs_in_the_environment():
    common = (REPO / "rules/common.smk").read_text()
    assert re.search(r'^JOB_ENV = "\.\./envs/datadream\.yaml"$', common, re.MULTILINE)
    scripts = conda = 0
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        scripts += len(re.findall(r"^ +script:$", text, re.MULTILINE))
        conda += len(re.findall(r"^( +)conda:\n\1    JOB_ENV\n\1script:$", text, re.MULTILINE))
    assert scripts == conda and scripts >= 28


@needs_conda
def test_sdm_conda_dry_run_plans_with_the_environment(tmp_path):
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    planned = run_snakemake(tmp_path, config, "-n", "--sdm", "conda")
    assert "datadream.yaml" in planned.stdout + planned.stderr


@pytest.mark.e2e
@needs_conda
def test_sdm_conda_creates_the_environment_and_runs_the_smoke_config(tmp_path):
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    run_snakemake(tmp_path, config, "--sdm", "conda")
    assert (tmp_path / "results/summary/table1_accuracy.csv").is_file()
    assert any((tmp_path / ".snakemake/conda").glob("*.yaml"))
