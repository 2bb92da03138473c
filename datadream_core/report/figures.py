"""Figures as PNG: per-class FID histograms (paper Fig. 4), accuracy scaling curves (Fig. 5) and classifier
training curves."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # jobs run headless, on cluster nodes without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from datadream_core.io import atomic_path, read_csv, read_json  # noqa: E402
from datadream_core.report import GENERATOR_LABELS, generator_label  # noqa: E402
from datadream_core.report.tables import Run, accuracy_by_seed, comparison_label, read_runs  # noqa: E402

REAL_COLOR, ZEROSHOT_COLOR = "black", "0.55"


def generator_color(generator: str) -> str:
    """A fixed colour per generator, the same in every figure whatever the config lists."""
    known = list(GENERATOR_LABELS)
    return plt.get_cmap("tab10")(known.index(generator) if generator in known else len(known))


def save_png(figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(figure)


def _panel_grid(count: int, width: float = 4.2, height: float = 3.2):
    columns = min(max(count, 1), 3)
    rows = -(-max(count, 1) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False,
                                layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return figure, list(axes.flat)


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_below(figure, handles: Mapping[str, object]) -> None:
    """One legend for all panels, {label: handle}, below them."""
    if handles:
        # "outside" lets the constrained layout reserve room, so the legend never covers axis labels
        figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(4, len(handles)),
                      frameon=False, fontsize=8)


# --- FID histograms -----------------------------------------------------------------------------

def mean_per_class_fid(per_class_csvs: Iterable[str | Path]) -> dict[int, float]:
    """Class index -> FID averaged over the given runs (seeds); classes without an FID are left out."""
    values: dict[int, list[float]] = defaultdict(list)
    for path in per_class_csvs:
        for row in read_csv(path):
            if row["fid"] != "":
                values[int(row["class_index"])].append(float(row["fid"]))
    return {index: float(np.mean(fids)) for index, fids in values.items()}


def plot_fid_histograms(per_class: Mapping[str, Mapping[int, float]], dataset: str, output: str | Path,
                        subtitle: str = "") -> None:
    """One histogram series per generator over the classes' FIDs, with each series' median marked."""
    figure, ax = plt.subplots(figsize=(6.4, 3.8))
    everything = [value for fids in per_class.values() for value in fids.values()]
    if not everything:
        _no_data(ax, "no per-class FID available")
    else:
        bins = np.histogram_bin_edges(everything, bins=min(30, max(5, len(everything) // 3)))
        for generator, fids in per_class.items():
            values = list(fids.values())
            if not values:
                continue
            color = generator_color(generator)
            median = float(np.median(values))
            ax.hist(values, bins=bins, histtype="stepfilled", alpha=0.25, color=color)
            ax.hist(values, bins=bins, histtype="step", linewidth=1.6, color=color,
                    label=f"{generator_label(generator)} (median {median:.1f}, {len(values)} classes)")
            ax.axvline(median, color=color, linestyle="--", linewidth=1)
        ax.set_xlabel("per-class FID (lower = closer to the real images)")
        ax.set_ylabel("number of classes")
        ax.legend(frameon=False, fontsize=8)
    ax.set_title(f"{dataset}: per-class FID" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    save_png(figure, output)


# --- scaling curves -----------------------------------------------------------------------------

@dataclass
class Series:
    label: str
    color: object
    linestyle: str = "-"
    points: dict[float, list[float]] = field(default_factory=dict)  # x -> accuracies over seeds
    horizontal: bool = False  # a reference level drawn across the panel (its single point's x is ignored)


def _series(label, color, linestyle, index, keys: Mapping[float, tuple], horizontal=False) -> Series:
    points = {x: list(index.get(key, {}).values()) for x, key in keys.items()}
    return Series(label, color, linestyle, {x: v for x, v in points.items() if v}, horizontal)


def nsynth_series(runs: Iterable[Run], dataset: str, generators: Sequence[str], trainsets: Sequence[str],
                  seeds: Sequence[int], shots: int, n_values: Sequence[int]) -> list[Series]:
    """Accuracy against synthetic images per class: S solid, R+S dashed, Real-finetune and zero-shot as levels."""
    index = accuracy_by_seed(runs, seeds)
    series = []
    for g in generators:
        for kind, prefix, style in (("synth", "synth_", "-"), ("real+synth", "real+synth_", "--")):
            if kind in trainsets:
                name = f"{generator_label(g)} ({'S' if kind == 'synth' else 'R+S'})"
                series.append(_series(name, generator_color(g), style, index,
                                      {n: (dataset, prefix + g, shots, n) for n in n_values}))
    series.append(_series("Real-finetune (R)", REAL_COLOR, ":", index, {0: (dataset, "real", shots, 0)}, True))
    series.append(_series("CLIP zero-shot", ZEROSHOT_COLOR, ":", index, {0: (dataset, "zeroshot", shots, 0)}, True))
    return series


def shots_series(runs: Iterable[Run], dataset: str, generators: Sequence[str], seeds: Sequence[int],
                 shots_values: Sequence[int], n_synth: int) -> list[Series]:
    """Accuracy against real shots K: Real-finetune and each generator's R+S; zero-shot as a level."""
    index = accuracy_by_seed(runs, seeds)
    series = [_series("Real-finetune (R)", REAL_COLOR, "-", index, {k: (dataset, "real", k, 0) for k in shots_values})]
    series += [_series(f"{generator_label(g)} (R+S)", generator_color(g), "--", index,
                       {k: (dataset, f"real+synth_{g}", k, n_synth) for k in shots_values}) for g in generators]
    zeroshot = {k: (dataset, "zeroshot", k, 0) for k in shots_values}
    levels = [v for k in zeroshot for v in index.get(zeroshot[k], {}).values()]
    series.append(Series("CLIP zero-shot", ZEROSHOT_COLOR, ":", {0: levels} if levels else {}, horizontal=True))
    return series


def _draw(ax, series: Series) -> None:
    if not series.points:
        return
    if series.horizontal:
        values = next(iter(series.points.values()))
        mean, std = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        ax.axhline(mean, color=series.color, linestyle=series.linestyle, linewidth=1.4, label=series.label)
        if std:
            ax.axhspan(mean - std, mean + std, color=series.color, alpha=0.08, linewidth=0)
        return
    xs = sorted(series.points)
    means = np.array([np.mean(series.points[x]) for x in xs])
    stds = np.array([np.std(series.points[x], ddof=1) if len(series.points[x]) > 1 else 0.0 for x in xs])
    ax.plot(xs, means, color=series.color, linestyle=series.linestyle, marker="o", markersize=4, label=series.label)
    ax.fill_between(xs, means - stds, means + stds, color=series.color, alpha=0.12, linewidth=0)


def plot_scaling(series_by_dataset: Mapping[str, Sequence[Series]], x_values: Sequence[float], xlabel: str,
                 title: str, output: str | Path) -> None:
    """One panel per dataset; lines are means over seeds, bands ± one std."""
    figure, axes = _panel_grid(len(series_by_dataset))
    ticks = sorted(set(x_values))
    logarithmic = len(ticks) > 1 and min(ticks) > 0 and max(ticks) / min(ticks) >= 8
    for ax, (dataset, series) in zip(axes, series_by_dataset.items()):
        ax.set_title(dataset, fontsize=10)
        if not any(s.points for s in series):
            _no_data(ax, "no runs yet")
            continue
        for one in series:
            _draw(ax, one)
        if logarithmic:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    _legend_below(figure, handles)
    figure.suptitle(title, fontsize=11)
    save_png(figure, output)


def plot_accuracy_vs_nsynth(runs: Sequence[Run], datasets: Sequence[str], generators: Sequence[str],
                            trainsets: Sequence[str], seeds: Sequence[int], shots: int, n_values: Sequence[int],
                            output: str | Path) -> None:
    series = {d: nsynth_series(runs, d, generators, trainsets, seeds, shots, n_values) for d in datasets}
    plot_scaling(series, n_values, "synthetic images per class",
                 f"Accuracy vs synthetic images per class ({shots} real shots)", output)


def plot_accuracy_vs_shots(runs: Sequence[Run], datasets: Sequence[str], generators: Sequence[str],
                           seeds: Sequence[int], shots_values: Sequence[int], n_synth: int, output: str | Path) -> None:
    series = {d: shots_series(runs, d, generators, seeds, shots_values, n_synth) for d in datasets}
    plot_scaling(series, shots_values, "real shots per class (K)",
                 f"Accuracy vs real shots (R+S with {n_synth} synthetic images per class)", output)


# --- training curves ----------------------------------------------------------------------------

def plot_training_curves(runs: Mapping[str, Mapping], title: str, output: str | Path) -> None:
    """Training loss and validation accuracy against optimiser steps, a line per run ({label: metrics.json}),
    so that a reader can see whether each run converged within its step budget."""
    figure, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    colors = plt.get_cmap("tab10")
    for position, (label, metrics) in enumerate(runs.items()):
        steps = metrics.get("steps_done") or []
        color = colors(position % 10)
        if metrics.get("train_loss"):
            losses = [np.nan if loss is None else loss for loss in metrics["train_loss"]]  # None: every batch mixed
            loss_ax.plot(steps, losses, color=color, marker="o", markersize=3, label=label)
        if metrics.get("val_accuracy"):
            val_ax.plot(steps, metrics["val_accuracy"], color=color, marker="o", markersize=3, label=label)
            selected = metrics.get("selected_epoch") or 0
            if selected:
                val_ax.plot(steps[selected - 1], metrics["val_accuracy"][selected - 1], color=color, marker="*",
                            markersize=11)
    for ax, ylabel in ((loss_ax, "training loss (epoch mean, unmixed batches)"), (val_ax, "validation accuracy (%)")):
        if not ax.lines:
            _no_data(ax, "not recorded")
            continue
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    _legend_below(figure, dict(zip(*reversed(loss_ax.get_legend_handles_labels()))))
    figure.suptitle(title, fontsize=11)
    save_png(figure, output)


# --- the report's figure jobs -------------------------------------------------------------------

def fid_histogram_figure(per_class: Sequence[str], png: str | Path, dataset: str, generators: Sequence[str],
                         seeds: Sequence[int], shots: int, features: str, split: str) -> None:
    """Fig. 4 of one dataset; `per_class` lists each generator's per-class FID tables (one per seed) in turn."""
    by_generator = {generator: mean_per_class_fid(per_class[position * len(seeds):(position + 1) * len(seeds)])
                    for position, generator in enumerate(generators)}
    plot_fid_histograms(by_generator, dataset, png, subtitle=f"{shots} shots, {features} features, real {split} split,"
                                                             f" mean over seeds {list(seeds)}")


def training_curves_figure(metrics: Sequence[str], png: str | Path, dataset: str, trainsets: Sequence[str],
                           shots: int, seed: int) -> None:
    """The training curves of one dataset's Table 2 runs, whose metrics files `metrics` lists as `trainsets`."""
    runs = {comparison_label(trainset): read_json(path) for trainset, path in zip(trainsets, metrics)}
    plot_training_curves(runs, f"{dataset}: classifier training, {shots} shots, seed {seed}"
                         " (star: the epoch selected on validation)", png)


def scaling_nsynth_figure(metrics: Sequence[str], png: str | Path, datasets: Sequence[str], generators: Sequence[str],
                          trainsets: Sequence[str], seeds: Sequence[int], shots: int, points: Sequence[int]) -> None:
    """Accuracy against synthetic images per class (paper Fig. 5), at the `points` n_synth values."""
    plot_accuracy_vs_nsynth(read_runs(metrics), datasets, generators, trainsets, seeds, shots, points, png)


def scaling_shots_figure(metrics: Sequence[str], png: str | Path, datasets: Sequence[str], generators: Sequence[str],
                         seeds: Sequence[int], n_synth: int, points: Sequence[int]) -> None:
    """Accuracy against real shots (paper Fig. 5), at the `points` K values."""
    plot_accuracy_vs_shots(read_runs(metrics), datasets, generators, seeds, points, n_synth, png)
