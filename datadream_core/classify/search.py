"""The hyperparameter search's choice: of a grid's runs, the one with the best validation accuracy.

Torch-free, so that choosing is a light job on the head node. Every point was trained and tested by its own
job; only the chosen point's test accuracy is filed as the run's result, and the grid travels with it so that
the report can show every point's validation accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping, Sequence

from datadream_core.identity import digest
from datadream_core.io import LOG, atomic_path, read_json, write_json


def select_search_point(point_metrics: Mapping[str, str | Path], point_per_class: Mapping[str, str | Path],
                        out_metrics_json: str | Path, out_per_class_csv: str | Path) -> dict:
    """File the point with the highest validation accuracy (the first in grid order on a tie) as the run's result."""
    grid, point_digests, loaded = [], [], {}
    for name, path in point_metrics.items():
        metrics = loaded[name] = read_json(path)
        point_digests.append((metrics.get("made_from") or {}).get("settings_digest", "unrecorded"))
        val = metrics.get("selected_val_accuracy")
        if val is None:
            raise ValueError(f"{path} has no validation accuracy (selection '{metrics.get('selection')}'): a search needs"
                             " classify.selection: val and a val split")
        grid.append({"point": name, "val_accuracy": float(val), "test_accuracy": float(metrics["accuracy"]),
                     "settings": {key: metrics["classify"].get(key) for key in ("learning_rate", "epochs", "steps", "weight_decay")}})
    if not grid:
        raise ValueError("a search needs at least one grid point")
    chosen = max(grid, key=lambda point: point["val_accuracy"])  # max keeps the first of equals
    metrics = loaded[chosen["point"]]
    metrics.update(search=grid, search_choice=chosen["point"])
    # The chosen point differs between runs; what they share is the grid: the tables compare runs by it.
    metrics["made_from"] = {**(metrics.get("made_from") or {}), "settings_digest": digest(*point_digests)}
    with atomic_path(out_per_class_csv) as tmp:
        shutil.copyfile(point_per_class[chosen["point"]], tmp)
    write_json(out_metrics_json, metrics)
    return metrics


def select_search_point_job(points: Sequence[str], point_metrics: Sequence[str], point_per_class: Sequence[str],
                            out_metrics_json: str | Path, out_per_class_csv: str | Path) -> None:
    """`select_search_point` of the grid `points`, whose files `point_metrics` and `point_per_class` list in turn."""
    chosen = select_search_point(dict(zip(points, point_metrics)), dict(zip(points, point_per_class)),
                                 out_metrics_json, out_per_class_csv)
    LOG.info("search: chose %s (val %.2f%%)", chosen["search_choice"], chosen["selected_val_accuracy"])
