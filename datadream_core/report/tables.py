"""Accuracy and FID tables from metrics.json / fid summary.json files, as CSV, Markdown and HTML.

A cell is the mean ± sample standard deviation over seeds. A run that is missing leaves its seed out
of the cell, and a cell with no runs stays empty: a missing number must never read as 0. When fewer
seeds than configured contributed, the cell says so. Avg is computed per seed over all datasets (only
seeds present in every dataset count), then summarised over seeds like any other cell.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from datadream_core.classify.trainsets import DEFAULT_METHOD, parse_trainset
from datadream_core.io import LOG, read_json, write_csv, write_text
from datadream_core.report import generator_label
from datadream_core.report.paper import PAPER_ACCURACY, PAPER_N_SYNTH, PAPER_SHOTS

SeedValues = Mapping[int, float]


CONFIDENCE = 0.95


@dataclass(frozen=True)
class Cell:
    """Values over seeds, shown as mean ± sample std, or for a paired difference (`interval`) as the mean with
    its 95 % t-interval over seeds: an interval that excludes 0 is a paired t-test significant at 5 %."""

    values: tuple[float, ...] = ()
    expected: int = 1
    digits: int = 1
    signed: bool = False
    interval: bool = False

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.values)) if self.values else None

    @property
    def confidence_interval(self) -> tuple[float, float] | None:
        if len(self.values) < 2:
            return None
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(self.values) - 1) * stats.sem(self.values)
        return self.mean - half, self.mean + half

    @property
    def significant(self) -> bool:
        bounds = self.confidence_interval
        return bounds is not None and (bounds[0] > 0 or bounds[1] < 0)

    def text(self) -> str:
        if not self.values:
            return ""
        sign = "+" if self.signed else ""
        text = f"{self.mean:{sign}.{self.digits}f}"
        bounds = self.confidence_interval
        if self.interval and bounds is not None:
            text += f" [{bounds[0]:{sign}.{self.digits}f}, {bounds[1]:{sign}.{self.digits}f}]" + ("*" if self.significant else "")
        elif len(self.values) > 1:
            text += f" ± {np.std(self.values, ddof=1):.{self.digits}f}"
        if len(self.values) < self.expected:
            text += f" ({len(self.values)}/{self.expected} seeds)"
        return text


@dataclass(frozen=True)
class Row:
    section: str
    label: str
    cells: tuple[Cell, ...]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    lower_is_better: bool = False
    note: str = ""
    provenance: list[str] = field(default_factory=list)  # what the cells were made from, per dataset
    warnings: list[str] = field(default_factory=list)  # cells of one dataset made from different settings


def with_average(datasets: Sequence[str]) -> list[str]:
    """The columns of a per-dataset table: Avg joins them only when there is more than one dataset."""
    return list(datasets) + (["Avg"] if len(datasets) > 1 else [])


def make_row(section: str, label: str, per_dataset: Mapping[str, SeedValues], datasets: Sequence[str],
             expected: int, average: bool = True, digits: int = 1, signed: bool = False, interval: bool = False) -> Row:
    """One row: a cell per dataset, plus Avg over datasets when `average` and there are several."""
    def cell(values: Iterable[float]) -> Cell:
        return Cell(tuple(values), expected, digits, signed, interval)

    cells = [cell(per_dataset.get(d, {})[s] for s in sorted(per_dataset.get(d, {}))) for d in datasets]
    if average and len(datasets) > 1:
        common = set.intersection(*(set(per_dataset.get(d, {})) for d in datasets)) if datasets else set()
        cells.append(cell(float(np.mean([per_dataset[d][s] for d in datasets])) for s in sorted(common)))
    return Row(section, label, tuple(cells))


# --- accuracy runs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    dataset: str
    trainset: str
    shots: int
    seed: int
    n_synth: int
    accuracy: float
    made_from: Mapping[str, str] = field(default_factory=dict)  # settings digest, model and data identity


def read_runs(paths: Iterable[str | Path]) -> list[Run]:
    runs = []
    for path in paths:
        metrics = read_json(path)
        try:
            runs.append(Run(str(metrics["dataset"]), str(metrics["trainset"]), int(metrics["shots"]),
                            int(metrics["seed"]), int(metrics["n_synth"]), float(metrics["accuracy"]),
                            dict(metrics.get("made_from") or {})))
        except KeyError as missing:
            raise ValueError(f"{path} has no key {missing} (a classifier metrics.json needs dataset, trainset,"
                             " shots, seed, n_synth, accuracy)") from None
    return runs


PROVENANCE_KEYS = (("settings_digest", "classifier settings"), ("model_identity", "CLIP"), ("data_identity", "data"))


def provenance(runs: Iterable[Run], datasets: Sequence[str]) -> tuple[list[str], list[str]]:
    """(a line per dataset naming what its cells were made from, a warning per dataset whose cells disagree).

    Trained classifiers of one method share its resolved classify section per dataset (CoOp and VPT have their
    own, so each method is compared with itself); zero-shot CLIP uses only its evaluation keys, so it too is
    compared with itself. A warning means some cells are stale results of other settings, another model or
    other data: rerunning the workflow remakes them.
    """
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        method = parse_trainset(run.trainset).method
        kind = "zero-shot" if run.trainset == "zeroshot" else "trained" if method == DEFAULT_METHOD else f"trained {method}"
        groups[(run.dataset, kind)].append(run)
    kinds = sorted({kind for _, kind in groups}, key=lambda kind: (kind == "zero-shot", kind))
    lines, warnings = [], []
    for dataset in datasets:
        parts = []
        for kind in kinds:
            group = groups.get((dataset, kind), [])
            for key, label in PROVENANCE_KEYS:
                values = sorted({run.made_from.get(key, "unrecorded") for run in group})
                if not values:
                    continue
                parts.append(f"{kind} {label} {', '.join(values)}")
                if len(values) > 1:
                    warnings.append(f"{dataset}: {kind} cells come from {len(values)} different {label} "
                                    f"({', '.join(values)}); rerun the workflow to remake the stale ones")
        if parts:
            lines.append(f"{dataset}: " + "; ".join(parts))
    return lines, warnings


def with_provenance(table: Table, runs: Iterable[Run], datasets: Sequence[str]) -> Table:
    table.provenance, table.warnings = provenance(runs, datasets)
    return table


def accuracy_by_seed(runs: Iterable[Run], seeds: Sequence[int]) -> dict[tuple, dict[int, float]]:
    """(dataset, trainset, shots, n_synth) -> {seed: accuracy}, for the configured seeds only."""
    index: dict[tuple, dict[int, float]] = defaultdict(dict)
    for run in runs:
        if run.seed in seeds:
            index[(run.dataset, run.trainset, run.shots, run.n_synth)][run.seed] = run.accuracy
    return index


@dataclass(frozen=True)
class RowSpec:
    section: str
    label: str
    trainset: str
    n_synth: int


def table1_rows(generators: Sequence[str], trainsets: Sequence[str], n_synth: int) -> list[RowSpec]:
    """The paper's Table 1 rows for the configured classifier training sets."""
    rows = []
    if "zeroshot" in trainsets:
        rows.append(RowSpec("Zero-shot", "CLIP zero-shot", "zeroshot", 0))
    if "synth" in trainsets:
        rows += [RowSpec("Synthetic only (S)", generator_label(g), f"synth_{g}", n_synth) for g in generators]
    if "real" in trainsets:
        rows.append(RowSpec("Real + synthetic (R+S)", "Real-finetune (R only)", "real", 0))
    if "real+synth" in trainsets:
        rows += [RowSpec("Real + synthetic (R+S)", generator_label(g), f"real+synth_{g}", n_synth) for g in generators]
    return rows


def table1(runs: Iterable[Run], datasets: Sequence[str], generators: Sequence[str], trainsets: Sequence[str],
           seeds: Sequence[int], shots: int, n_synth: int) -> Table:
    runs = list(runs)
    index = accuracy_by_seed(runs, seeds)
    rows = [make_row(spec.section, spec.label, {d: index.get((d, spec.trainset, shots, spec.n_synth), {}) for d in datasets},
                     datasets, len(seeds)) for spec in table1_rows(generators, trainsets, n_synth)]
    return with_provenance(Table(f"Table 1: test accuracy (%), {shots} real shots, {n_synth} synthetic images per class",
                 with_average(datasets), rows,
                 note=f"Mean ± std over seeds {list(seeds)}; empty cells are runs that do not exist. "
                      "Bold: best in its section."), runs, datasets)


# Table 2's parameter-efficient few-shot baselines, trained on the real shots alone (train set real/<method>).
PEFT_BASELINES = {"vpt": "VPT (R only)", "coop": "CoOp (R only)"}
REAL_FINETUNE = "Real-finetune (R only)"


def comparison_label(trainset: str) -> str:
    """A Table 2 run's name as the table and the training-curve figure show it."""
    spec = parse_trainset(trainset)
    if spec.generator:
        return f"{generator_label(spec.generator)} ({'R+S' if spec.uses_real else 'S'})"
    return REAL_FINETUNE if spec.method == DEFAULT_METHOD else PEFT_BASELINES[spec.method]


def comparison_table(runs: Iterable[Run], datasets: Sequence[str], generators: Sequence[str], seeds: Sequence[int],
                     shots: int, n_synth: int, paper_names: Mapping[str, str | None],
                     methods: Sequence[str] = ("lora",)) -> Table:
    """Table 2 style: the few-shot baselines of `methods` (VPT, CoOp) and Real-finetune on the real shots, real +
    synthetic training per generator, its gain over Real-finetune, the paper's numbers.

    `paper_names` maps a dataset key to its CoOp benchmark name (None for other datasets).
    """
    runs = list(runs)
    index = accuracy_by_seed(runs, seeds)

    def per_dataset(trainset: str, n: int) -> dict[str, dict[int, float]]:
        return {d: index.get((d, trainset, shots, n), {}) for d in datasets}

    real = per_dataset("real", 0)
    section = f"This run (R+S, {shots}-shot, {n_synth}/class)"
    rows = [make_row(section, label, per_dataset(f"real/{method}", 0), datasets, len(seeds))
            for method, label in PEFT_BASELINES.items() if method in methods]
    rows.append(make_row(section, REAL_FINETUNE, real, datasets, len(seeds)))
    rows += [make_row(section, generator_label(g), per_dataset(f"real+synth_{g}", n_synth), datasets, len(seeds))
             for g in generators]
    def paired_rows(title: str, baseline: Mapping[str, SeedValues], compared: Sequence[str]) -> list[Row]:
        rows = []
        for g in compared:
            mixed = per_dataset(f"real+synth_{g}", n_synth)
            difference = {d: {s: mixed[d][s] - baseline[d][s] for s in mixed[d] if s in baseline[d]} for d in datasets}
            rows.append(make_row(title, generator_label(g), difference, datasets, len(seeds), signed=True, interval=True))
        return rows

    rows += paired_rows(GAIN_SECTION, real, generators)
    if "sd" in generators:
        rows += paired_rows(SD_SECTION, per_dataset("real+synth_sd", n_synth), [g for g in generators if g != "sd"])
    verdicts = significance(rows, datasets)
    if any(paper_names.get(d) for d in datasets):
        paper_section = f"Paper (reported, {PAPER_SHOTS}-shot, {PAPER_N_SYNTH}/class)"
        for label, values in PAPER_ACCURACY.items():
            reported = {d: {0: values[paper_names[d]]} for d in datasets if paper_names.get(d) in values}
            rows.append(make_row(paper_section, label, reported, datasets, 1))
    return with_provenance(
        Table(f"Table 2: real + synthetic training compared ({shots} shots)", with_average(datasets), rows,
              note=f"Test accuracy (%), mean ± std over seeds {list(seeds)}. Differences are paired by seed and shown as "
                   "mean [95 % t-interval over seeds]; * marks an interval that excludes 0 (a paired t-test "
                   f"significant at 5 %). {verdicts} Paper rows appear for CoOp benchmarks only; their Avg covers "
                   "this table's datasets."),
        [run for run in runs if run.trainset == "real" or run.trainset.startswith("real+synth_")], datasets)


GAIN_SECTION = "Gain over Real-finetune (paired by seed)"
SD_SECTION = "Difference from unadapted SD (paired by seed)"


def significance(rows: Iterable[Row], datasets: Sequence[str]) -> str:
    """One sentence per difference section: which of its cells the seeds tell apart from 0 and which not."""
    sentences = []
    for title, baseline in ((GAIN_SECTION, "Real-finetune"), (SD_SECTION, "unadapted SD")):
        cells = [(row.label, dataset, cell) for row in rows if row.section == title
                 for dataset, cell in zip(datasets, row.cells) if len(cell.values) > 1]
        if not cells:
            continue
        apart = [f"{label} ({dataset}, {cell.mean:+.1f})" for label, dataset, cell in cells if cell.significant]
        together = [f"{label} ({dataset})" for label, dataset, cell in cells if not cell.significant]
        sentences.append(f"Against {baseline}, the seeds tell apart: {', '.join(apart) or 'none'}; "
                         f"within noise: {', '.join(together) or 'none'}.")
    return " ".join(sentences)


# --- FID ----------------------------------------------------------------------------------------

def read_fid_summaries(paths: Iterable[str | Path]) -> list[dict]:
    summaries = []
    for path in paths:
        summary = read_json(path)
        missing = {"dataset", "generator", "shots", "seed", "mean_per_class_fid", "dataset_fid"} - set(summary)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}: not an FID summary written by the fid_per_class rule")
        summaries.append(summary)
    return summaries


def fid_table(summaries: Iterable[Mapping], datasets: Sequence[str], generators: Sequence[str], seeds: Sequence[int],
              shots: int) -> Table:
    values: dict[tuple, dict[int, float]] = defaultdict(dict)
    features = set()
    for summary in summaries:
        seed = int(summary["seed"])
        if int(summary["shots"]) != shots or seed not in seeds:
            continue
        features.add(summary.get("features", "?"))
        for key in ("mean_per_class_fid", "dataset_fid"):
            if summary[key] is not None:
                values[(key, summary["dataset"], summary["generator"])][seed] = float(summary[key])
    sections = {"mean_per_class_fid": "Mean per-class FID", "dataset_fid": "Dataset FID (all classes pooled)"}
    rows = [make_row(title, generator_label(g), {d: values.get((key, d, g), {}) for d in datasets}, datasets,
                     len(seeds), average=False, digits=2)
            for key, title in sections.items() for g in generators]
    return Table(f"FID of synthetic against real images ({shots} shots; lower is closer)", list(datasets), rows,
                 lower_is_better=True,
                 note=f"Features: {', '.join(sorted(features)) or 'n/a'}. Mean ± std over seeds {list(seeds)}. "
                      "FIDs of sets smaller than the feature dimension are biased upward; compare rows, not "
                      "absolute values across datasets.")


# --- rendering ----------------------------------------------------------------------------------

def best_cells(table: Table) -> set[tuple[int, int]]:
    """(row, column) of the best mean per column within each section that has two or more numbers; sections of
    paired differences have none, since the largest of several differences within noise is no winner."""
    best = set()
    sections: dict[str, list[int]] = defaultdict(list)
    for position, row in enumerate(table.rows):
        if not any(cell.interval for cell in row.cells):
            sections[row.section].append(position)
    for positions in sections.values():
        for column in range(len(table.columns)):
            filled = [(table.rows[p].cells[column].mean, p) for p in positions if table.rows[p].cells[column].values]
            if len(filled) >= 2:
                pick = min if table.lower_is_better else max
                best.add((pick(filled)[1], column))
    return best


def to_markdown(table: Table) -> str:
    best = best_cells(table)
    lines = [f"**{table.title}**", "", "| Setting | Method | " + " | ".join(table.columns) + " |",
             "|---|---|" + "---:|" * len(table.columns)]
    previous = None
    for position, row in enumerate(table.rows):
        cells = [f"**{c.text()}**" if (position, i) in best else c.text() for i, c in enumerate(row.cells)]
        setting = row.section if row.section != previous else ""
        previous = row.section
        lines.append(f"| {setting} | {row.label} | " + " | ".join(cells) + " |")
    warnings = [f"> **Warning:** {warning}" for warning in table.warnings]
    made_from = [f"Made from: {line}" for line in table.provenance]
    return "\n".join(warnings + ([""] if warnings else []) + lines + ["", table.note, ""] + made_from
                     + ([""] if made_from else []))


HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e3e3; white-space: nowrap; }
th { background: #f3f3f3; text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.section td { background: #fafafa; font-weight: 600; color: #555; border-top: 2px solid #bbb; }
td.best { font-weight: 700; }
p.note { color: #555; font-size: 13px; max-width: 60em; }
p.warning { color: #8a1c00; background: #fff1ec; border-left: 4px solid #d9480f; padding: 4px 8px; }
p.provenance { color: #777; font-size: 12px; font-family: monospace; }
"""


def to_html(table: Table) -> str:
    best = best_cells(table)
    width = len(table.columns) + 1
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["Method"] + table.columns)
    body, previous = [], None
    for position, row in enumerate(table.rows):
        if row.section != previous:
            body.append(f'<tr class="section"><td colspan="{width}">{html.escape(row.section)}</td></tr>')
            previous = row.section
        cells = "".join(f'<td class="num{" best" if (position, i) in best else ""}">{html.escape(c.text())}</td>'
                        for i, c in enumerate(row.cells))
        body.append(f"<tr><td>{html.escape(row.label)}</td>{cells}</tr>")
    warnings = "".join(f'<p class="warning">Warning: {html.escape(line)}</p>\n' for line in table.warnings)
    made_from = "".join(f'<p class="provenance">Made from: {html.escape(line)}</p>\n' for line in table.provenance)
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(table.title)}</title>'
            f"<style>{HTML_STYLE}</style></head><body>\n<h3>{html.escape(table.title)}</h3>\n{warnings}"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) +
            f'\n</tbody></table>\n<p class="note">{html.escape(table.note)}</p>\n{made_from}</body></html>\n')


def write_table(table: Table, csv_path: str | Path, markdown_path: str | Path, html_path: str | Path) -> None:
    write_csv(csv_path, ["setting", "method"] + table.columns,
              ([row.section, row.label] + [cell.text() for cell in row.cells] for row in table.rows))
    write_text(markdown_path, to_markdown(table))
    write_text(html_path, to_html(table))


def write_accuracy_tables(metrics: Sequence[str | Path], table1_csv: str | Path, table1_md: str | Path,
                          table1_html: str | Path, table2_csv: str | Path, table2_md: str | Path, table2_html: str | Path,
                          datasets: Sequence[str], generators: Sequence[str], trainsets: Sequence[str],
                          seeds: Sequence[int], shots: int, n_synth: int, paper_names: Mapping[str, str | None],
                          methods: Sequence[str]) -> None:
    """Table 1 (accuracy per training set) and Table 2 (real + synthetic compared) of the runs' metrics files."""
    runs = read_runs(metrics)
    write_table(table1(runs, datasets, generators, trainsets, seeds, shots, n_synth), table1_csv, table1_md, table1_html)
    write_table(comparison_table(runs, datasets, generators, seeds, shots, n_synth, paper_names, methods),
                table2_csv, table2_md, table2_html)
    LOG.info("tables from %d classifier runs", len(runs))


def write_fid_table(summaries: Sequence[str | Path], csv_path: str | Path, markdown_path: str | Path,
                    html_path: str | Path, datasets: Sequence[str], generators: Sequence[str], seeds: Sequence[int],
                    shots: int) -> None:
    """The FID table (mean per-class and dataset-level FID per generator and dataset) of the FID summaries."""
    table = fid_table(read_fid_summaries(summaries), datasets, generators, seeds, shots)
    write_table(table, csv_path, markdown_path, html_path)
