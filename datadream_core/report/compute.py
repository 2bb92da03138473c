"""Where the compute went: the cost records of the model jobs a run planned, summed per rule, dataset and stage.

Each model job writes results/benchmarks/{rule}/{dataset}/{job}.json (its `cost` output, datadream_core/
warm_start.py): its own wall seconds, CPU seconds and peak resident memory, measured in the process that ran it
(a warm job's are its fork's, not the waiting process's). A LoRA job also records its peak GPU memory in each
adapter's train.json (`peak_memory_mb`, when it trained on a GPU). Per rule and dataset the table gives the
number of jobs, their summed wall and CPU time and the largest single job's memory (what one cluster allocation
must hold); per stage the same over all of its rules and datasets.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from datadream_core.chunks import chunk_classes
from datadream_core.io import LOG, read_json, write_csv, write_text
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
COLUMNS = ("stage", "rule", "dataset", "jobs", "wall_s", "cpu_s", "max_rss_mb", "gpu_peak_mb",
           "released_estimate_a100_h")


@dataclass(frozen=True)
class JobCost:
    rule: str
    dataset: str
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    gpu_peak_mb: float | None


def read_cost(path: Path) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one job's cost record."""
    record = read_json(path)
    missing = [key for key in ("wall_s", "cpu_s", "max_rss_mb") if key not in record]
    if missing:
        raise ValueError(f"{path}: not a job cost record (no {', '.join(missing)})")
    return float(record["wall_s"]), float(record["cpu_s"]), float(record["max_rss_mb"])


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


def job_costs(records: Iterable[str | Path], workdir: str | Path = ".") -> list[JobCost]:
    """The cost of each record, given as results/benchmarks/{rule}/{dataset}/{job}.json relative to `workdir`."""
    costs = []
    for record in sorted(map(str, records)):
        path = Path(record)
        rule, dataset, *job = path.relative_to(BENCHMARKS_DIR).with_suffix("").parts
        if rule not in STAGE_OF_RULE:
            raise ValueError(f"{path}: cost record of unknown rule '{rule}' (known: {', '.join(STAGE_OF_RULE)})")
        wall, cpu, rss = read_cost(Path(workdir) / path)
        gpu = lora_gpu_peak_mb(Path(workdir), rule, dataset, "/".join(job)) if rule.startswith("train_lora_") else None
        costs.append(JobCost(rule, dataset, wall, cpu, rss, gpu))
    return costs


def _largest(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _summary(stage: str, rule: str, dataset: str, costs: list[JobCost], estimate: float | None = None) -> dict:
    return {"stage": stage, "rule": rule, "dataset": dataset, "jobs": len(costs),
            "wall_s": sum(cost.wall_s for cost in costs), "cpu_s": sum(cost.cpu_s for cost in costs), "max_rss_mb": _largest(cost.max_rss_mb for cost in costs),
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
    note = ("<p>wall_s and cpu_s: summed over jobs; max_rss_mb and gpu_peak_mb: the largest single job. "
            "released_estimate_a100_h: estimated cost of the released code in the paper's ImageNet setting "
            "(it publishes no timings).</p>")
    return f"<table border='1'>\n<tr>{header}</tr>\n{body}</table>\n{note}\n"


def write_compute_table(records: Iterable[str | Path], csv_path: str | Path, html_path: str | Path) -> list[dict]:
    """The table of the jobs whose cost `records` are given (a run's planned jobs, no others)."""
    rows = compute_rows(job_costs(records))
    write_csv(csv_path, COLUMNS, ([_cell(row[name], digits=4) for name in COLUMNS] for row in rows))
    write_text(html_path, to_html(rows))
    LOG.info("compute table: %d rows", len(rows))
    return rows
