"""The zero-shot classifier is trained on nothing, so its result does not depend on K or the few-shot seed:
it is evaluated once per dataset and filed under every (K, seed) run that the tables and figures read.

Torch-free, so that filing it is a light job on the head node.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from datadream_core.io import LOG, atomic_path, read_json, write_json


def file_zeroshot_for_run(metrics_json: str | Path, per_class_csv: str | Path, shots: int, seed: int,
                          out_metrics_json: str | Path, out_per_class_csv: str | Path) -> dict:
    """Copy the one zero-shot evaluation of a dataset to a run's paths, with the run's K and seed."""
    metrics = read_json(metrics_json)
    if metrics.get("trainset") != "zeroshot":
        raise ValueError(f"{metrics_json} holds train set '{metrics.get('trainset')}', not the zero-shot evaluation")
    metrics.update(shots=shots, seed=seed, evaluated_once_as=str(metrics_json))
    with atomic_path(out_per_class_csv) as tmp:
        shutil.copyfile(per_class_csv, tmp)
    write_json(out_metrics_json, metrics)
    LOG.info("zero-shot accuracy %.2f%% filed for k%s seed%s", metrics["accuracy"], shots, seed)
    return metrics
