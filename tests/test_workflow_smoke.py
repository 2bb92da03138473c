"""The whole DAG on configs/smoke.yaml: tiny models, a 3-class world, every stage, the report."""

import json
import re

import pytest
from conftest import run_snakemake
from datadream_core import layout
from datadream_core.io import read_csv

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke_run(smoke_local):
    return smoke_local


def test_every_stage_produced_its_outputs(smoke_run):
    work, config = smoke_run
    results = work / "results/miniworld"
    assert (work / layout.adapter_files("miniworld", "dset", 2, 0)[0]).exists()
    for class_index in range(3):
        adapter = work / layout.adapter_dir("miniworld", "cls", 2, 0, class_index)
        assert (adapter / "pytorch_lora_weights.safetensors").exists()
        made_from = json.loads((adapter / "train.json").read_text())["made_from"]
        assert made_from["model_identity"] == "built:tiny-sd-seed0"
        assert made_from["data_identity"].startswith("world:") and len(made_from["settings_digest"]) == 16
    for generator, shots in (("sd", 0), ("datadream_dset", 2), ("datadream_cls", 2)):
        manifest = read_csv(results / f"synth/{generator}/k{shots}_seed0/manifest.csv")
        assert [(row["class_index"], row["image_index"]) for row in manifest] == [
            (str(c), str(i)) for c in range(3) for i in range(4)]
        assert all((work / row["path"]).exists() for row in manifest)
        assert len({(row["settings_digest"], row["model_identity"], row["data_identity"]) for row in manifest}) == (
            3 if generator == "datadream_cls" else 1)  # one adapter per class
    trainsets = ["zeroshot", "real"] + [f"{kind}_{g}" for kind in ("synth", "real+synth")
                                        for g in ("sd", "datadream_dset", "datadream_cls")]
    for trainset in trainsets:
        n = 0 if trainset in ("zeroshot", "real") else 4
        metrics = json.loads((results / f"clf/{trainset}/k2_seed0/n{n}/metrics.json").read_text())
        assert metrics["trainset"] == trainset and 0 <= metrics["accuracy"] <= 100
        assert metrics["made_from"]["model_identity"] == "built:tiny-clip-seed0"
    for generator in ("sd", "datadream_dset", "datadream_cls"):
        rows = read_csv(results / f"fid/{generator}/k2_seed0/per_class.csv")
        assert len(rows) == 3 and all(float(row["fid"]) >= 0 for row in rows)


def test_report_holds_every_table_and_figure(smoke_run):
    work, _ = smoke_run
    html = (work / "report.html").read_text(encoding="utf-8")
    for category in ("Accuracy", "FID", "Scaling", "Samples"):
        assert re.search(rf'"{category}"', html), category
    for name in ("table1_accuracy.html", "table2_comparison.html", "table_fid.html", "fid_hist_miniworld.png",
                 "scaling_nsynth.png", "scaling_shots.png", "miniworld.png"):
        assert name in html, name


def test_tables_record_what_they_were_made_from(smoke_run):
    work, _ = smoke_run
    table = (work / "results/summary/table1_accuracy.md").read_text(encoding="utf-8")
    assert "Made from: miniworld: trained classifier settings " in table
    assert "Warning" not in table


def test_rerun_has_nothing_to_do(smoke_run):
    work, config = smoke_run
    result = run_snakemake(work, config, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr
