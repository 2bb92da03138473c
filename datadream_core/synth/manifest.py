"""A generator's manifest: the shard.csv rows of all its shards, torch-free so that merging is a light job."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datadream_core.io import LOG, read_csv, write_csv

# Every shard row says what made it: the generation settings' digest, the model's identity and the data's.
IDENTITY_COLUMNS = ("settings_digest", "model_identity", "data_identity")
SHARD_HEADER = ("path", "class_index", "image_index", "seed", "prompt", "generator") + IDENTITY_COLUMNS


def merge_manifest(shard_dirs: Sequence[str | Path], manifest: str | Path) -> int:
    """Concatenate the shards' shard.csv files into one manifest ordered by class and image index.

    A generator's own columns (IsSynth's source shot, DISEF's caption and filter attempts) are kept
    after the common ones.
    """
    rows = [row for folder in shard_dirs for row in read_csv(Path(folder) / "shard.csv")]
    rows.sort(key=lambda row: (int(row["class_index"]), int(row["image_index"])))
    header = list(SHARD_HEADER)
    header += dict.fromkeys(key for row in rows for key in row if key not in SHARD_HEADER)
    write_csv(manifest, header, ([row.get(key, "") for key in header] for row in rows))
    LOG.info("manifest lists %d images", len(rows))
    return len(rows)
