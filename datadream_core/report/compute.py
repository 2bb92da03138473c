"""Where the compute went: Snakemake's benchmark files of the model rules, summed per rule, dataset and stage.

Each model job writes results/benchmarks/{rule}/{dataset}/{job}.tsv (Snakemake's `benchmark:`): wall seconds
(`s`) and peak resident memory (`max_rss`, MB). A LoRA job also records its peak GPU memory in each adapter's
train.json (`peak_memory_mb`, when it trained on a GPU). Per rule and dataset the table gives the number of
jobs, their summed wall time and the largest single job's memory (what one cluster allocation must hold);
per stage the same over all of its rules and datasets.
"""

from __future__ import annotations

import csv
import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from datadream_core.chunks import chunk_classes
from datadream_core.io import read_json, write_csv, write_text
from datadream_core.layout import BENCHMARKS_DIR, adapter_dir, image_adapter_dir

STAGE_OF_RULE = {
    "build_miniworld_models": "models",
    "train_lora_dset": "dream",
    "train_lora_cls": "dream",
    "train_lora_image": "dream",  # LoFT's per-image adapters (their generation is `generate`, generator loft)
    "caption_shots": "synth",
    "generate": "synth",
    "train_classifier": "classify",
    "train_search_point": "classify",
    "evaluate_zeroshot": "classify",
    "fid_real_features": "evaluate",
    "fid_per_class": "evaluate",
}
STAGES = ("models", "dream", "synth", "classify", "evaluate")
# The released code publishes no timings. These estimate its cost in the paper's ImageNet setting (C = 1000
# classes, eager PyTorch on one A100) from public throughput figures of the same models, not from a run:
# dream: 16 shots x 200 epochs x C image-steps of a batch-8 LoRA step at about 12 images/s (diffusers-style
# training figures); synth: 500 images per class at about 0.97 images/s (diffusers' SD 2.x batch-16 A100
# benchmark, 50 steps with guidance); classify: 60 epochs of 2,016 steps of batch 256 at about 0.38 s a step.
_IMAGENET_CLASSES = 1000
RELEASED_ESTIMATE_A100_HOURS = {
    "dream": 16 * 200 * _IMAGENET_CLASSES / 12 / 3600,
    "synth": 500 * _IMAGENET_CLASSES / 0.97 / 3600,
    "classify": 60 * 2016 * 0.38 / 3600,
}
COLUMNS = ("stage", "rule", "dataset", "jobs", "wall_s", "max_rss_mb", "gpu_peak_mb", "released_estimate_a100_h")


@dataclass(frozen=True)
class JobCost:
    rule: str
    dataset: str
    wall_s: float
    max_rss_mb: float | None
    gpu_peak_mb: float | None


def _number(text: str) -> float | None:
    return None if text in ("", "NA", "-") else float(text)


def read_benchmark(path: Path) -> tuple[float, float | None]:
    """(wall seconds, max RSS in MB) of one Snakemake benchmark file (its first repeat)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
    return float(rows[0]["s"]), _number(rows[0].get("max_rss", ""))


def image_adapter_count(workdir: Path, dataset: str, seed, class_index: int) -> int:
    """How many of a class's shots have a LoFT adapter (trained for every shot of the seed's few-shot list)."""
    rank = 0
    while (workdir / image_adapter_dir(dataset, seed, class_index, rank) / "train.json").is_file():
        rank += 1
    return rank


def lora_gpu_peak_mb(workdir: Path, rule: str, dataset: str, job: str) -> float | None:
    """The largest peak GPU memory recorded by the adapters of a LoRA job (None when trained on a CPU)."""
    run, _, chunk = job.partition("/")
    if rule == "train_lora_dset":
        folders = [adapter_dir(dataset, "dset", *_run(run))]
    elif rule == "train_lora_cls":
        folders = [adapter_dir(dataset, "cls", *_run(run), index) for index in chunk_classes(chunk)]
    else:  # train_lora_image, job seed{s}/{chunk}: every shot's adapter of the chunk's classes
        seed = run.removeprefix("seed")
        folders = [image_adapter_dir(dataset, seed, index, rank) for index in chunk_classes(chunk)
                   for rank in range(image_adapter_count(workdir, dataset, seed, index))]
    peaks = []
    for folder in folders:  # relative to `workdir`
        summary = read_json(workdir / folder / "train.json")
        if str(summary.get("device", "")).startswith("cuda"):
            peaks.append(float(summary["peak_memory_mb"]))
    return max(peaks) if peaks else None


def _run(job: str) -> tuple[str, str]:
    """(shots, seed) of a run name like k16_seed0."""
    shots, seed = job.removeprefix("k").split("_seed")
    return shots, seed


def job_costs(root: str | Path = BENCHMARKS_DIR) -> list[JobCost]:
    """Every benchmark file under `root`, the workflow's results/benchmarks/{rule}/{dataset}/{job}.tsv."""
    workdir = Path(root).parents[len(Path(BENCHMARKS_DIR).parts) - 1]
    costs = []
    for path in sorted(Path(root).rglob("*.tsv")):
        rule, dataset, *job = path.relative_to(root).with_suffix("").parts
        if rule not in STAGE_OF_RULE:
            raise ValueError(f"{path}: benchmark of unknown rule '{rule}' (known: {', '.join(STAGE_OF_RULE)})")
        wall, rss = read_benchmark(path)
        gpu = lora_gpu_peak_mb(workdir, rule, dataset, "/".join(job)) if rule.startswith("train_lora_") else None
        costs.append(JobCost(rule, dataset, wall, rss, gpu))
    return costs


def _largest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _summary(stage: str, rule: str, dataset: str, costs: list[JobCost], estimate: float | None = None) -> dict:
    return {"stage": stage, "rule": rule, "dataset": dataset, "jobs": len(costs),
            "wall_s": sum(cost.wall_s for cost in costs), "max_rss_mb": _largest(cost.max_rss_mb for cost in costs),
            "gpu_peak_mb": _largest(cost.gpu_peak_mb for cost in costs), "released_estimate_a100_h": estimate}


def compute_rows(costs: Iterable[JobCost]) -> list[dict]:
    """One row per (stage, rule, dataset), each stage closed by its total (rule and dataset "all")."""
    by_stage: Mapping[str, dict[tuple[str, str], list[JobCost]]] = defaultdict(lambda: defaultdict(list))
    for cost in costs:
        by_stage[STAGE_OF_RULE[cost.rule]][(cost.rule, cost.dataset)].append(cost)
    rows = []
    for stage in STAGES:
        groups = by_stage.get(stage, {})
        rows += [_summary(stage, rule, dataset, group) for (rule, dataset), group in sorted(groups.items())]
        everything = [cost for group in groups.values() for cost in group]
        if everything or stage in RELEASED_ESTIMATE_A100_HOURS:
            rows.append(_summary(stage, "all", "all", everything, RELEASED_ESTIMATE_A100_HOURS.get(stage)))
    return rows


def _cell(value, digits: int = 1) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_html(rows: Iterable[Mapping]) -> str:
    header = "".join(f"<th>{html.escape(name)}</th>" for name in COLUMNS)
    body = "".join(
        ("<tr style='font-weight:bold'>" if row["rule"] == "all" else "<tr>")
        + "".join(f"<td>{html.escape(_cell(row[name]))}</td>" for name in COLUMNS) + "</tr>\n" for row in rows)
    note = ("<p>wall_s: summed over jobs; max_rss_mb and gpu_peak_mb: the largest single job. "
            "released_estimate_a100_h: estimated cost of the released code in the paper's ImageNet setting "
            "(it publishes no timings).</p>")
    return f"<table border='1'>\n<tr>{header}</tr>\n{body}</table>\n{note}\n"


def write_compute_table(root: str | Path, csv_path: str | Path, html_path: str | Path) -> list[dict]:
    rows = compute_rows(job_costs(root))
    write_csv(csv_path, COLUMNS, ([_cell(row[name], digits=4) for name in COLUMNS] for row in rows))
    write_text(html_path, to_html(rows))
    return rows
