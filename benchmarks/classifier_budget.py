"""What a smaller classifier budget would cost `make run`'s tables: the classifier runs that Table 1 and Table 2
read most, retrained on a finished `make run`'s images and shots under config.yaml's settings and under cheaper
variants, every seed; prints test accuracy (mean ± std over seeds) and CPU seconds per run, writes JSON.

    .venv/bin/python benchmarks/classifier_budget.py --run-dir DIR   # DIR: a folder where `make run` finished
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import torch

from datadream_core import layout
from datadream_core.classify.train import run_classifier
from datadream_core.classify.trainsets import method_settings, parse_trainset
from datadream_core.config import load_config

REPO = Path(__file__).resolve().parents[1]
# variant -> overrides of the classify section ({"vpt": {...}} overrides VPT's own section)
VARIANTS = {
    "config.yaml": {},
    "LoRA batch 16": {"batch_size": 16},
    "LoRA 20 steps at 5e-3": {"steps": 20, "learning_rate": 5.0e-3},
    "VPT batch 64": {"vpt": {"batch_size": 64}},
}
LORA_TRAINSETS = ("real", "synth_sd", "synth_datadream_cls", "real+synth_datadream_cls")


def runs_of(variant: str) -> list[str]:
    """The runs a variant changes: VPT's for a VPT variant, LoRA's for a LoRA one, both for the config's own."""
    overrides = VARIANTS[variant]
    vpt = ["real/vpt"] if not overrides or "vpt" in overrides else []
    return vpt + (list(LORA_TRAINSETS) if set(overrides) != {"vpt"} else [])


def with_overrides(classify: dict, overrides: dict) -> dict:
    classify = copy.deepcopy(classify)
    for key, value in overrides.items():
        if isinstance(value, dict):
            classify[key] = {**classify.get(key, {}), **value}
        else:
            classify[key] = value
    return classify


def train_one(job: tuple) -> dict:
    run_dir, out_dir, variant, trainset, seed = job
    torch.set_num_threads(1)
    os.chdir(run_dir)
    config = load_config("config.yaml")
    dataset, shots = next(iter(config["datasets"])), config["shots"][0]
    spec = parse_trainset(trainset)
    n_synth = config["synth"]["n_synth"] if spec.generator else 0
    settings = method_settings(with_overrides(config["classify"], VARIANTS[variant]), spec.method, shots)
    out = Path(out_dir) / variant.replace(" ", "_") / trainset.replace("/", "_") / f"seed{seed}"
    started = time.process_time()
    metrics = run_classifier(
        dataset=dataset, trainset=trainset, shots=shots, seed=seed, n_synth=n_synth,
        classes_csv=layout.classes_csv(dataset), splits_csv=layout.splits_csv(dataset),
        fewshot_csv=layout.fewshot_csv(dataset, seed),
        manifest_csv=layout.synth_manifest(dataset, spec.generator, shots, seed) if spec.generator else None,
        clip=config["models"]["clip"], settings=settings, metrics_json=out / "metrics.json",
        per_class_csv=out / "per_class.csv", checkpoint=out / "checkpoint.pt")
    return {"variant": variant, "trainset": trainset, "seed": seed, "accuracy": metrics["accuracy"],
            "steps": metrics["steps"], "cpu_s": round(time.process_time() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a folder where `make run` finished")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results-classifier-budget.json"))
    args = parser.parse_args()
    run_dir = str(Path(args.run_dir).resolve())
    seeds = load_config(Path(run_dir) / "config.yaml")["seeds"]
    with tempfile.TemporaryDirectory(prefix="classifier_budget_") as scratch:
        jobs = [(run_dir, scratch, variant, trainset, seed)
                for variant in VARIANTS for trainset in runs_of(variant) for seed in seeds]
        with Pool(args.processes) as pool:
            rows = pool.map(train_one, jobs, chunksize=1)
    print(f"{'variant':<24} {'train set':<26} {'accuracy % (mean ± std)':>24} {'per seed':<24} {'CPU s/run':>9}")
    summary = []
    for variant in VARIANTS:
        for trainset in runs_of(variant):
            mine = [row for row in rows if row["variant"] == variant and row["trainset"] == trainset]
            accuracies = [row["accuracy"] for row in mine]
            cpu = statistics.mean(row["cpu_s"] for row in mine)
            summary.append({"variant": variant, "trainset": trainset, "accuracies": accuracies,
                            "mean": statistics.mean(accuracies), "std": statistics.stdev(accuracies), "cpu_s": cpu})
            print(f"{variant:<24} {trainset:<26} {summary[-1]['mean']:>15.1f} ± {summary[-1]['std']:>4.1f}"
                  f"    {str([round(a, 1) for a in accuracies]):<24} {cpu:>9.1f}")
    result = {"run_dir": run_dir, "variants": VARIANTS, "load_average": os.getloadavg(), "summary": summary,
              "runs": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
