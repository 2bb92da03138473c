"""After SIGKILL of the Snakemake process, README's resume commands finish the run and redo no finished job."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from datadream_core import layout
from shown_commands import bash_block_commands

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def readme_resume_additions() -> tuple[list[str], list[str]]:
    """What README adds to the crashed command: first to unlock, then to resume (the same on a laptop and SLURM)."""
    shown = bash_block_commands((REPO / "README.md").read_text(encoding="utf-8"), "README.md")
    additions = []
    for at, unlock in enumerate(shown):
        if "--unlock" not in unlock.argv:
            continue
        resume = shown[at + 1]
        crashed = os.path.commonprefix([unlock.argv, resume.argv])
        additions.append((list(unlock.argv[len(crashed):]), list(resume.argv[len(crashed):])))
    assert len(additions) == 2, f"README should show an unlock-then-resume pair for a laptop and for SLURM: {additions}"
    assert additions[0] == additions[1], f"README resumes differently on a laptop and on SLURM: {additions}"
    assert additions[0][0] == ["--unlock"], additions
    return additions[0]


def finished_files(results: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(results)): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in sorted(results.rglob("*")) if path.is_file()}


def test_killed_head_resumes_with_readme_commands_and_redoes_no_finished_job(tmp_path):
    unlock, resume = readme_resume_additions()
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text(encoding="utf-8"))
    # the adapters of both DataDream modes, and no others (LoFT's per-image ones, the scaling K's)
    config["synth"]["generators"] = ["datadream_dset", "datadream_cls"]
    config["scaling"] = {"n_synth": [], "shots": []}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    # No workflow profile: its rerun-incomplete default must not stand in for README's commands.
    crashed = [sys.executable, "-m", "snakemake", "loras", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--workflow-profile", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    with open(tmp_path / "crashed.log", "w") as log:
        head = subprocess.Popen(crashed, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        # Snakemake starts a LoRA job only once every job upstream of it has finished.
        while not list((tmp_path / "logs/train_lora").rglob("*.log")):
            assert head.poll() is None, (tmp_path / "crashed.log").read_text()[-4000:]
            time.sleep(0.1)
        finished = {path: stat for path, stat in finished_files(tmp_path / "results").items()
                    if "/dream/" not in f"/{path}"}
        os.killpg(head.pid, signal.SIGKILL)  # the head and the jobs it runs, as a lost node or closed terminal would
        head.wait()
    assert {"miniworld/fewshot/seed0.csv", "miniworld/classes.csv", "models/tiny_sd/model_index.json"} <= set(finished)

    refused = subprocess.run(crashed, capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "--unlock" in refused.stderr, refused.stderr[-3000:]

    unlocked = subprocess.run(crashed + unlock, capture_output=True, text=True, env=env)
    assert unlocked.returncode == 0, unlocked.stderr[-3000:]
    resumed = subprocess.run(crashed + resume, capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-6000:]

    # per-class adapters are trained by one rule per class chunk (train_lora_cls_c0000_c0002_miniworld)
    redone = {re.sub(r"_c\d{4}_c\d{4}_\w+$", "", rule)
              for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", resumed.stderr)}
    adapter_rules = {"train_lora_dset", "train_lora_cls", "train_lora_image"}
    assert redone & adapter_rules and redone <= adapter_rules | {"loras"}, \
        resumed.stderr[-6000:]
    after = finished_files(tmp_path / "results")
    assert {path: after.get(path) for path in finished} == finished
    adapters = [layout.adapter_files("miniworld", "dset", 2, 0)[0]] + [
        layout.adapter_files("miniworld", "cls", 2, 0, index)[0] for index in range(3)]
    assert all((tmp_path / adapter).is_file() for adapter in adapters)
    left = subprocess.run(crashed + ["-n"], capture_output=True, text=True, env=env)
    assert "Nothing to be done" in left.stdout + left.stderr, left.stdout[-3000:]
