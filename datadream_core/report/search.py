"""The classifier search in the report: every grid point's validation and test accuracy, the chosen point marked.

Each run's metrics.json, as `select_search_point` filed it, carries its whole grid under `search` and the
chosen point's name under `search_choice`; this reads them back into one long CSV (a row per run and point)
and one HTML table (a row per run, a column per point), so that a reader sees how flat or peaked the
validation accuracy was and whether the test accuracy agreed with the choice.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from datadream_core.classify.trainsets import parse_trainset
from datadream_core.io import LOG, read_json, write_csv, write_text
from datadream_core.report.tables import HTML_STYLE

SEARCH_SETTINGS = ("learning_rate", "epochs", "steps", "weight_decay")
CSV_HEADER = ("dataset", "method", "trainset", "shots", "seed", "n_synth", "point", *SEARCH_SETTINGS,
              "val_accuracy", "test_accuracy", "chosen")


@dataclass(frozen=True)
class SearchedRun:
    """One classifier run of the search: which run it is, and its grid in grid order."""

    dataset: str
    trainset: str  # the train set without its method: real, synth_sd, ...
    method: str
    shots: int
    seed: int
    n_synth: int
    points: tuple[dict, ...]  # {"point", "val_accuracy", "test_accuracy", "settings"} as select_search_point wrote
    choice: str

    @property
    def key(self) -> tuple:
        return self.dataset, self.method, self.trainset, self.shots, self.seed, self.n_synth


def read_searched_runs(paths: Iterable[str | Path]) -> list[SearchedRun]:
    """The runs of `paths` (metrics.json files filed by select_search_point), sorted by dataset, method, train set."""
    runs = []
    for path in paths:
        metrics = read_json(path)
        missing = {"dataset", "trainset", "shots", "seed", "n_synth", "search", "search_choice"} - set(metrics)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}: not a run filed by select_search_point "
                             "(a search table needs classify.search)")
        trainset = parse_trainset(str(metrics["trainset"]))
        runs.append(SearchedRun(str(metrics["dataset"]), trainset.name.partition("/")[0], trainset.method,
                                int(metrics["shots"]), int(metrics["seed"]), int(metrics["n_synth"]),
                                tuple(metrics["search"]), str(metrics["search_choice"])))
    return sorted(runs, key=lambda run: run.key)


def grid_rows(runs: Iterable[SearchedRun]) -> list[tuple]:
    """A row per run and grid point, with CSV_HEADER's columns."""
    return [(*run.key, point["point"], *(point["settings"][key] for key in SEARCH_SETTINGS),
             point["val_accuracy"], point["test_accuracy"], point["point"] == run.choice)
            for run in runs for point in run.points]


def grid_html(runs: Sequence[SearchedRun], points: Sequence[str]) -> str:
    """A row per run, a column per grid point (in `points`' order) holding validation / test accuracy; the chosen
    point's cell is bold and ticked. A point a run lacks (a stale result) is an empty cell, never a number."""
    title = "Classifier search: validation / test accuracy (%) of every grid point"
    head = "".join(f"<th>{html.escape(name)}</th>" for name in
                   ["Dataset", "Method", "Train set", "K", "Seed", "Synthetic / class", *points])
    body = []
    for run in runs:
        by_name = {point["point"]: point for point in run.points}
        cells = []
        for name in points:
            point = by_name.get(name)
            if point is None:
                cells.append('<td class="num"></td>')
                continue
            text = f"{point['val_accuracy']:.1f} / {point['test_accuracy']:.1f}"
            chosen = name == run.choice
            cells.append(f'<td class="num{" best" if chosen else ""}">{html.escape(text)}{" ✓" if chosen else ""}</td>')
        labels = "".join(f"<td>{html.escape(str(value))}</td>" for value in run.key)
        body.append(f"<tr>{labels}{''.join(cells)}</tr>")
    note = ("Each cell is one grid point's accuracy on the validation set it was selected on, then on the test "
            "split. ✓ (bold) marks the point with the best validation accuracy (the first in grid order on a tie): "
            "its test accuracy is the run's result in the accuracy tables. Point names spell their settings: "
            "lr = learning rate, ep = epochs, st = optimiser steps, wd = weight decay.")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{HTML_STYLE}</style></head><body>\n<h3>{html.escape(title)}</h3>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) +
            f'\n</tbody></table>\n<p class="note">{html.escape(note)}</p>\n</body></html>\n')


def write_search_grid(paths: Iterable[str | Path], points: Sequence[str], csv_path: str | Path,
                      html_path: str | Path) -> list[SearchedRun]:
    runs = read_searched_runs(paths)
    write_csv(csv_path, CSV_HEADER, grid_rows(runs))
    write_text(html_path, grid_html(runs, points))
    LOG.info("search grid of %d runs over %d points", len(runs), len(points))
    return runs
