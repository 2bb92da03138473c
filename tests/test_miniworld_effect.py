"""The paper's claim, shown by the shipped miniworld models on configs/miniworld_small.yaml (3 seeds).

DataDream_cls's synthetic images train a better classifier than the unadapted model's, by more than
twice the seed std; its per-class FID is lower for most classes; real + synthetic is at least real.
"""

import json
import shutil
from pathlib import Path
from statistics import mean, stdev

import pytest
import yaml

from conftest import run_snakemake
from datadream_core import layout
from datadream_core.io import read_csv

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("miniworld_small")
    shutil.copytree(REPO / "assets", work / "assets")  # the config names the shipped models relative to the run
    config = yaml.safe_load((REPO / "configs/miniworld_small.yaml").read_text())
    # the runs the tests read, not every classifier of the config (real + synthetic of sd is not one)
    trainsets = ["real", "synth_sd", "synth_datadream_cls", "real+synth_datadream_cls"]
    fid = [layout.fid_per_class("miniworld", generator, 16, seed) for generator in ("sd", "datadream_cls")
           for seed in config["seeds"]]
    run_snakemake(work, config, *[_metrics(trainset, seed, config) for trainset in trainsets for seed in config["seeds"]],
                  *fid)
    return work / "results/miniworld", config


def _metrics(trainset: str, seed: int, config: dict) -> str:
    return layout.classifier_metrics("miniworld", trainset, 16, seed, 0 if trainset == "real" else config["synth"]["n_synth"])


def _accuracies(results: Path, trainset: str, config: dict) -> list[float]:
    return [json.loads((results.parents[1] / _metrics(trainset, seed, config)).read_text())["accuracy"]
            for seed in config["seeds"]]


def test_datadream_synthetic_data_beats_the_unadapted_model(small_run):
    results, config = small_run
    datadream, unadapted = _accuracies(results, "synth_datadream_cls", config), _accuracies(results, "synth_sd", config)
    print(f"\nsynthetic only: DataDream_cls {datadream}, sd {unadapted}")
    assert mean(datadream) - mean(unadapted) > 2 * max(stdev(datadream), stdev(unadapted))


def test_datadream_is_closer_to_the_real_images_per_class(small_run):
    results, config = small_run
    lower = []
    for seed in config["seeds"]:
        ours = {row["name"]: float(row["fid"]) for row in read_csv(results / f"fid/datadream_cls/k16_seed{seed}/per_class.csv")}
        theirs = {row["name"]: float(row["fid"]) for row in read_csv(results / f"fid/sd/k16_seed{seed}/per_class.csv")}
        lower += [ours[name] < theirs[name] for name in theirs]
    assert sum(lower) > len(lower) / 2, lower


def test_real_plus_synthetic_is_at_least_real_only(small_run):
    results, config = small_run
    real, both = _accuracies(results, "real", config), _accuracies(results, "real+synth_datadream_cls", config)
    print(f"\nreal {real}, real+synth DataDream_cls {both}")
    assert mean(both) >= mean(real)
