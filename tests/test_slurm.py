"""The smoke config through `--profile slurm` on a real single-node SLURM, compared with a local run."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO
from datadream_core import layout
from datadream_core.warm_start import SOCKET_VARIABLE
from slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as reason:
        cluster.stop()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no SLURM here: {reason}")
    yield cluster
    cluster.stop()


@functools.cache
def _rule_names() -> tuple[str, ...]:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                             str(REPO / "configs/smoke.yaml"), "--list-rules"], capture_output=True, text=True,
                            cwd=REPO, check=True)
    return tuple(line.strip() for line in result.stdout.splitlines() if line.strip() and " " not in line.strip())


def _site_profile(folder: Path) -> Path:
    """profiles/slurm as a user edits it for a site: here the test cluster's one partition, "debug"."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", mem_mb=1500, runtime=15)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def _slurm_run(work: Path, config: dict) -> subprocess.CompletedProcess:
    work.mkdir(parents=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    small = [f"{rule}:{key}={value}" for rule in _rule_names() for key, value in (("mem_mb", 1500), ("runtime", 15))]
    command = [
        "timeout", "-k", "30", "1500", sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
        # the partition reaches the jobs only through the profile (sbatch refuses any other partition)
        "--profile", str(_site_profile(work.parent / "profile")), "--directory", str(work),
        "--configfile", str(work / "config.yaml"),
        # The test cluster has no accounting (status through squeue), one node of at least 4 CPUs and partition
        # "debug"; four jobs at a time make fewer rounds of the plugin's status polling.
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1", "--jobs", "4",
        "--set-threads", *[f"{rule}=1" for rule in _rule_names()], "--set-resources", *small,
    ]
    # cold jobs, each in its own process under slurmstepd: the comparison with the local run (whose model jobs fork
    # from the warm server, tests/conftest.py) shows that a warm start changes no result
    env = {name: value for name, value in os.environ.items() if name != SOCKET_VARIABLE}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"})


def test_smoke_config_on_slurm_equals_the_local_run(cluster, request, tmp_path_factory, capsys):
    config = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    work = tmp_path_factory.mktemp("slurm_run") / "work"
    # Every stage (models, data, LoRA, generation, classifiers, FID, report) on the fewest jobs: DataDream_cls
    # and LoRA classifiers only, no scaling runs. All of these outputs exist in the local run too.
    synth = {**config["synth"], "generators": ["datadream_cls"]}
    result = _slurm_run(work, {**config, "dream": {**config["dream"], "modes": ["cls"]}, "synth": synth,
                               "classify": {**config["classify"], "methods": ["lora"]},
                               "scaling": {"n_synth": [], "shots": []}})
    # asked for only now: under pytest-xdist another worker makes the local run while SLURM runs this one
    local, local_config = request.getfixturevalue("smoke_local")
    assert local_config == config
    jobs = cluster.jobs()
    with capsys.disabled():
        print(f"\nSLURM saw {len(jobs)} jobs (id | rule/wildcards | final state):")
        for job in jobs:
            print("  " + " | ".join(job))
    assert result.returncode == 0, result.stderr[-5000:]
    assert jobs and all(state == "COMPLETED" for _, _, state in jobs)
    assert any("train_lora" in comment for _, comment, _ in jobs)

    results, reference = work / "results/miniworld", local / "results/miniworld"
    assert (results / "fewshot/seed0.csv").read_bytes() == (reference / "fewshot/seed0.csv").read_bytes()
    for adapter in (layout.adapter_dir("miniworld", "cls", 2, 0, index) for index in range(3)):
        ours, theirs = (load_file(path / adapter / "pytorch_lora_weights.safetensors") for path in (work, local))
        assert ours.keys() == theirs.keys()
        assert all(np.allclose(ours[key].numpy(), theirs[key].numpy(), atol=1e-5) for key in ours)
    # the local run also made the scaling runs' images (other K): compare the K and generators both ran
    runs = [f"k{shots}_seed{seed}" for shots in [0, *config["shots"]] for seed in config["seeds"]]
    generated = [folder for generator in synth["generators"] for run in runs
                 for folder in (reference / "synth").glob(f"c*/{generator}/{run}")]
    pngs = sorted(p.relative_to(reference) for folder in generated for p in folder.rglob("*.png"))
    assert pngs and pngs == sorted(p.relative_to(results) for p in (results / "synth").rglob("*.png"))
    for png in pngs:
        difference = np.abs(np.asarray(Image.open(results / png), dtype=int) - np.asarray(Image.open(reference / png), dtype=int))
        assert difference.max() <= 1, png
    ran = sorted((results / "clf").rglob("metrics.json"))
    trainsets = {metrics.relative_to(results / "clf").parts[0] for metrics in ran}
    expected = {"zeroshot", "real"} | {f"{kind}_{g}" for g in synth["generators"] for kind in ("synth", "real+synth")}
    assert expected == trainsets, trainsets
    for metrics in ran:
        theirs = json.loads((reference / metrics.relative_to(results)).read_text())
        assert json.loads(metrics.read_text())["accuracy"] == pytest.approx(theirs["accuracy"], abs=1e-6), metrics
