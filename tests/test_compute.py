"""The compute table: the cost records of a run's model jobs, summed per rule, dataset and stage."""

import csv

import pytest

from datadream_core.io import write_json
from datadream_core.layout import BENCHMARKS_DIR, adapter_dir, image_adapter_dir
from datadream_core.report.compute import compute_rows, job_costs, write_compute_table


def _record(workdir, job, seconds, rss, cpu=1.0):
    """Write a cost record under `workdir` and return its path relative to it, as a rule's input names it."""
    write_json(workdir / BENCHMARKS_DIR / job, {"wall_s": seconds, "cpu_s": cpu, "max_rss_mb": rss, "warm": False})
    return f"{BENCHMARKS_DIR}/{job}"


def test_rows_sum_wall_and_cpu_time_and_keep_the_largest_job_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    records = [_record(tmp_path, "train_classifier/world/real_k2_seed0_n0.json", 2.5, 300, cpu=2.0),
               _record(tmp_path, "train_classifier/world/synth_sd_k2_seed0_n4.json", 4.0, 500, cpu=3.5),
               _record(tmp_path, "train_classifier/other/real_k2_seed0_n0.json", 1.0, 200),
               _record(tmp_path, "evaluate_zeroshot/world/zeroshot.json", 0.5, 100),
               _record(tmp_path, "generate/world/sd/k0_seed0/c0000-c0002_shard000.json", 7.0, 900)]
    _record(tmp_path, "train_classifier/world/real_k4_seed0_n0.json", 99.0, 9999)  # an earlier config's job
    rows = write_compute_table(records, tmp_path / "compute.csv", tmp_path / "compute.html")
    by_key = {(row["stage"], row["rule"], row["dataset"]): row for row in rows}
    world = by_key[("classify", "train_classifier", "world")]
    assert (world["jobs"], world["wall_s"], world["cpu_s"], world["max_rss_mb"]) == (2, 6.5, 5.5, 500.0)
    classify = by_key[("classify", "all", "all")]
    assert (classify["jobs"], classify["wall_s"], classify["max_rss_mb"]) == (4, 8.0, 500.0)
    assert by_key[("synth", "all", "all")]["wall_s"] == 7.0 and by_key[("synth", "all", "all")]["jobs"] == 1
    assert by_key[("dream", "all", "all")]["jobs"] == 0  # a stage with a released-code estimate shows even if empty
    with open(tmp_path / "compute.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    html = (tmp_path / "compute.html").read_text()
    assert "<table" in html and "train_classifier" in html


def test_lora_jobs_report_the_gpu_memory_their_adapters_recorded(tmp_path):
    records = [_record(tmp_path, "train_lora_dset/world/k2_seed0.json", 3.0, 700),
               _record(tmp_path, "train_lora_cls/world/k2_seed0/c0000-c0001.json", 5.0, 800)]
    adapters = {adapter_dir("world", "dset", 2, 0): ("cuda:0", 4096.0), adapter_dir("world", "cls", 2, 0, 0): ("cuda", 1000.0),
                adapter_dir("world", "cls", 2, 0, 1): ("cuda", 1500.0)}
    for folder, (device, peak) in adapters.items():
        write_json(tmp_path / folder / "train.json", {"device": device, "peak_memory_mb": peak})
    gpu = {(cost.rule, cost.wall_s): cost.gpu_peak_mb for cost in job_costs(records, tmp_path)}
    assert gpu == {("train_lora_cls", 5.0): 1500.0, ("train_lora_dset", 3.0): 4096.0}
    write_json(tmp_path / adapter_dir("world", "dset", 2, 0) / "train.json", {"device": "cpu", "peak_memory_mb": 9.0})
    records.append(_record(tmp_path, "train_lora_image/world/seed0/c0000-c0000.json", 8.0, 900))  # every shot's
    for rank, peak in enumerate((700.0, 2500.0)):
        write_json(tmp_path / image_adapter_dir("world", 0, 0, rank) / "train.json",
                   {"device": "cuda", "peak_memory_mb": peak})
    dream = {row["rule"]: row["gpu_peak_mb"] for row in compute_rows(job_costs(records, tmp_path))
             if row["stage"] == "dream"}
    # a CPU's RSS is not GPU memory
    assert dream == {"train_lora_cls": 1500.0, "train_lora_dset": None, "train_lora_image": 2500.0, "all": 2500.0}


def test_a_record_of_an_unknown_rule_or_without_its_fields_is_named(tmp_path):
    with pytest.raises(ValueError, match="render_world"):
        job_costs([_record(tmp_path, "render_world/world/x.json", 1.0, 10)], tmp_path)
    write_json(tmp_path / BENCHMARKS_DIR / "generate/world/x.json", {"s": 1.0})
    with pytest.raises(ValueError, match="x.json: not a job cost record .*wall_s, cpu_s, max_rss_mb"):
        job_costs([f"{BENCHMARKS_DIR}/generate/world/x.json"], tmp_path)
