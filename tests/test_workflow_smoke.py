"""The whole DAG on configs/smoke.yaml: tiny models, a 3-class world, every stage, the report."""

import json
import re
import shutil

import pytest
from conftest import run_snakemake
from dry_runs import planned_jobs
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
    for category in ("Accuracy", "FID", "Scaling", "Samples", "Compute"):
        assert re.search(rf'"{category}"', html), category
    for name in ("table1_accuracy.html", "table2_comparison.html", "table_fid.html", "fid_hist_miniworld.png",
                 "scaling_nsynth.png", "scaling_shots.png", "miniworld.png", "compute.html"):
        assert name in html, name


def test_compute_table_stage_totals_are_the_sums_of_the_job_records(smoke_run):
    from datadream_core.report.compute import STAGE_OF_RULE, read_cost

    work, _ = smoke_run
    root = work / "results/benchmarks"
    files = sorted(root.rglob("*.json"))
    rules = {path.relative_to(root).parts[0] for path in files}
    assert rules == {"train_lora_dset", "train_lora_cls", "train_lora_image", "caption_shots", "generate",
                     "train_classifier", "evaluate_zeroshot", "fid_real_features", "fid_per_class"}
    generators = {path.relative_to(root / "generate/miniworld").parts[0] for path in root.glob("generate/*/*/*/*")}
    assert generators == {"sd", "datadream_dset", "datadream_cls", "issynth", "disef", "loft"}
    wall, cpu, jobs = {}, {}, {}
    for path in files:
        stage = STAGE_OF_RULE[path.relative_to(root).parts[0]]
        seconds, cpu_seconds, _ = read_cost(path)
        wall[stage] = wall.get(stage, 0.0) + seconds
        cpu[stage] = cpu.get(stage, 0.0) + cpu_seconds
        jobs[stage] = jobs.get(stage, 0) + 1
    totals = {row["stage"]: row for row in read_csv(work / "results/summary/compute.csv") if row["rule"] == "all"}
    assert set(wall) == {"dream", "synth", "classify", "evaluate"} <= set(totals)
    for stage, seconds in wall.items():
        assert float(totals[stage]["wall_s"]) == pytest.approx(seconds, abs=1e-3), stage
        assert float(totals[stage]["cpu_s"]) == pytest.approx(cpu[stage], abs=1e-3), stage
        assert int(totals[stage]["jobs"]) == jobs[stage], stage


def test_tables_record_what_they_were_made_from(smoke_run):
    work, _ = smoke_run
    table = (work / "results/summary/table1_accuracy.md").read_text(encoding="utf-8")
    assert "Made from: miniworld: trained classifier settings " in table
    assert "Warning" not in table


def test_rerun_has_nothing_to_do(smoke_run):
    work, config = smoke_run
    result = run_snakemake(work, config, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def _filled(table_csv, section_start, method):
    """The cells of a report table's row, found by its section's start and its method label."""
    rows = [row for row in read_csv(table_csv) if row["setting"].startswith(section_start) and row["method"] == method]
    assert len(rows) == 1, (table_csv.name, section_start, method)
    return rows[0]["miniworld"]


def test_tables_show_loft_and_table2_our_coop_and_vpt(smoke_run):
    """LoFT beside both DataDream modes in every table (issue 16); CoOp and VPT rows of our own runs in Table 2."""
    work, _ = smoke_run
    summary = work / "results/summary"
    for method in ("LoFT", "DataDream_cls", "DataDream_dset"):
        assert _filled(summary / "table1_accuracy.csv", "Synthetic only", method)
        assert _filled(summary / "table1_accuracy.csv", "Real + synthetic", method)
        assert _filled(summary / "table2_comparison.csv", "Gain over Real-finetune", method)
        assert _filled(summary / "table_fid.csv", "Mean per-class FID", method)
    for method, trainset in (("CoOp (R only)", "real/coop"), ("VPT (R only)", "real/vpt")):
        metrics = json.loads((work / f"results/miniworld/clf/{trainset}/k2_seed0/n0/metrics.json").read_text())
        assert metrics["classify"]["method"] == trainset.split("/")[1]
        assert _filled(summary / "table2_comparison.csv", "This run", method) == f"{metrics['accuracy']:.1f}"


def test_figures_draw_every_generator_and_the_scaling_figures_the_scaling_generators(smoke_run):
    """What each figure was made from, as Snakemake recorded it: the FID histogram and the grid draw every
    generator (LoFT beside both DataDream modes), the scaling figures the runs of scaling.generators only."""
    work, config = smoke_run
    summary = run_snakemake(work, config, "--detailed-summary").stdout.splitlines()
    header = summary[0].split("\t")
    recorded = {row[0]: row[header.index("input-file(s)")] for row in (line.split("\t") for line in summary[1:])}
    scaling = set(config["scaling"]["generators"])
    assert scaling < set(config["synth"]["generators"])
    for figure, part, drawn in (("figures/fid_hist_miniworld.png", "fid/{}/k2_seed0/per_class.csv", None),
                                ("grids/miniworld.png", "synth/{}/k{}_seed0/manifest.csv", None),
                                ("figures/scaling_nsynth.png", "clf/synth_{}/k2_seed0/n2/metrics.json", scaling),
                                ("figures/scaling_shots.png", "clf/real+synth_{}/k1_seed0/n4/metrics.json", scaling)):
        inputs = recorded[f"results/summary/{figure}"]
        for generator in config["synth"]["generators"]:
            expected = drawn is None or generator in drawn
            path = f"results/miniworld/{part.format(generator, layout.synth_shots(generator, 2))}"
            assert (path in inputs) == expected, (figure, generator)


# What issue 18 keeps torch out of: the jobs that only read and write tables, lists and pictures.
LIGHT_RULES = ["index_dataset", "sample_fewshot", "merge_manifest", "file_zeroshot", "table_accuracy", "table_fid",
               "fid_histogram", "sample_grid", "scaling_nsynth", "scaling_shots", "compute_table"]


def test_parsing_the_workflow_and_its_light_jobs_import_no_torch(smoke_run, tmp_path, monkeypatch):
    """Every light job of the smoke run made again on a copy, with Python's import log on in Snakemake's own
    process (which parses the workflow) and in every job's: none imports torch."""
    work, config = smoke_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    light_only = ["--forcerun", *LIGHT_RULES, "--allowed-rules", *LIGHT_RULES, "all"]
    jobs = planned_jobs(copy, config, *light_only)
    assert {rule for rule, _ in jobs} == set(LIGHT_RULES)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    result = run_snakemake(copy, config, *light_only)
    imports = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert imports.count("imported package") == len(jobs) + 1  # Snakemake's process and one per job
    assert "numpy" in imports and not [name for name in imports if name == "torch" or name.startswith("torch.")]
