"""The compute table: Snakemake benchmark files of the model rules, summed per rule, dataset and stage."""

import csv

import pytest

from datadream_core.io import write_json
from datadream_core.layout import adapter_dir, image_adapter_dir
from datadream_core.report.compute import compute_rows, job_costs, write_compute_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _benchmark(path, seconds, rss):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t50\t1\n")


def test_rows_sum_wall_time_and_keep_the_largest_job_memory(tmp_path):
    root = tmp_path / "benchmarks"
    _benchmark(root / "train_classifier/world/real_k2_seed0_n0.tsv", 2.5, 300)
    _benchmark(root / "train_classifier/world/synth_sd_k2_seed0_n4.tsv", 4.0, 500)
    _benchmark(root / "train_classifier/other/real_k2_seed0_n0.tsv", 1.0, 200)
    _benchmark(root / "evaluate_zeroshot/world/zeroshot.tsv", 0.5, "NA")
    _benchmark(root / "generate/world/sd/k0_seed0/c0000-c0002_shard000.tsv", 7.0, 900)
    rows = write_compute_table(root, tmp_path / "compute.csv", tmp_path / "compute.html")
    by_key = {(row["stage"], row["rule"], row["dataset"]): row for row in rows}
    world = by_key[("classify", "train_classifier", "world")]
    assert (world["jobs"], world["wall_s"], world["max_rss_mb"]) == (2, 6.5, 500.0)
    classify = by_key[("classify", "all", "all")]
    assert (classify["jobs"], classify["wall_s"], classify["max_rss_mb"]) == (4, 8.0, 500.0)
    assert by_key[("synth", "all", "all")]["wall_s"] == 7.0 and by_key[("synth", "all", "all")]["jobs"] == 1
    assert by_key[("dream", "all", "all")]["jobs"] == 0  # a stage with a released-code estimate shows even if empty
    with open(tmp_path / "compute.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    html = (tmp_path / "compute.html").read_text()
    assert "<table" in html and "train_classifier" in html


def test_lora_jobs_report_the_gpu_memory_their_adapters_recorded(tmp_path):
    root = tmp_path / "results/benchmarks"
    _benchmark(root / "train_lora_dset/world/k2_seed0.tsv", 3.0, 700)
    _benchmark(root / "train_lora_cls/world/k2_seed0/c0000-c0001.tsv", 5.0, 800)
    adapters = {adapter_dir("world", "dset", 2, 0): ("cuda:0", 4096.0), adapter_dir("world", "cls", 2, 0, 0): ("cuda", 1000.0),
                adapter_dir("world", "cls", 2, 0, 1): ("cuda", 1500.0)}
    for folder, (device, peak) in adapters.items():
        write_json(tmp_path / folder / "train.json", {"device": device, "peak_memory_mb": peak})
    gpu = {(cost.rule, cost.wall_s): cost.gpu_peak_mb for cost in job_costs(root)}
    assert gpu == {("train_lora_cls", 5.0): 1500.0, ("train_lora_dset", 3.0): 4096.0}
    write_json(tmp_path / adapter_dir("world", "dset", 2, 0) / "train.json", {"device": "cpu", "peak_memory_mb": 9.0})
    _benchmark(root / "train_lora_image/world/seed0/c0000-c0000.tsv", 8.0, 900)  # LoFT: every shot of the chunk
    for rank, peak in enumerate((700.0, 2500.0)):
        write_json(tmp_path / image_adapter_dir("world", 0, 0, rank) / "train.json",
                   {"device": "cuda", "peak_memory_mb": peak})
    dream = {row["rule"]: row["gpu_peak_mb"] for row in compute_rows(job_costs(root)) if row["stage"] == "dream"}
    # a CPU's RSS is not GPU memory
    assert dream == {"train_lora_cls": 1500.0, "train_lora_dset": None, "train_lora_image": 2500.0, "all": 2500.0}


def test_a_benchmark_of_an_unknown_rule_is_named(tmp_path):
    _benchmark(tmp_path / "render_world/world/x.tsv", 1.0, 10)
    with pytest.raises(ValueError, match="render_world"):
        job_costs(tmp_path)
