"""LoFT's per-image adapters of one class: trained together (one batch holds one image per adapter) against one at
a time, on the miniature world's tiny SD and on SD 2.1-base's real-size architecture (random weights), on a CPU.

    python benchmarks/loft_batched.py                      # both sizes; prints a table, writes JSON
    python benchmarks/loft_batched.py --sizes miniature    # the tiny model only

Rows per size: `together` (datadream_core.image_adapters, the workflow's path), `one_at_a_time` (the same code, a
class of one adapter at a time, the model loaded once) and, at the miniature size, `reload_per_adapter` (each
adapter its own training run with the model loaded again, as LoFT's released scripts and this project before
batching did). The ratio is each row's wall time over `together`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.models import build_sd  # noqa: E402
from datadream_core.config import dream_mode_settings, settings_dataclass, validate_config  # noqa: E402
from datadream_core.data.fewshot import Shot  # noqa: E402
from datadream_core.data.miniworld import render_world  # noqa: E402
from datadream_core.dream import DreamSettings, adapter_jobs, train_adapters  # noqa: E402
from datadream_core.image_adapters import train_image_adapters  # noqa: E402

# size: (adapters of the class, steps each, image side, whether the reload-per-adapter row runs)
SIZES = {"miniature": (16, 40, 32, True), "real": (2, 2, 512, False)}


def loft_settings(steps: int) -> DreamSettings:
    dream = validate_config({"datasets": {"w": {"source": "miniworld"}}})["dream"]
    return settings_dataclass(DreamSettings, {**dream_mode_settings(dream, "loft"), "epochs": steps, "warmup_steps": 0})


def shots_of_one_class(folder: Path, count: int, side: int) -> list[Shot]:
    rows = render_world(folder, "target", side, {"train": count}, seed=0)
    paths = [path for path, class_index, _ in rows if class_index == 0][:count]
    return [Shot(path, 0, rank) for rank, path in enumerate(paths)]


def time_row(train, sd: str, shots: list[Shot], settings: DreamSettings, out: Path, **options) -> float:
    jobs = adapter_jobs([out / f"shot{shot.rank}" for shot in shots], shots, ["a photo of a blicket"], [0],
                        per_image=True)
    started = time.perf_counter()
    train(sd, jobs, settings, seed=0, **options)
    return time.perf_counter() - started


def read_once(folder: str) -> None:
    """Read every file of the model folder, so that the first timed row does not pay the disk alone."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def bench_size(name: str, scratch: Path) -> list[dict]:
    adapters, steps, side, with_reload = SIZES[name]
    sd = build_sd(scratch / f"sd_{name}", real_size=name == "real")
    read_once(sd)
    shots = shots_of_one_class(scratch / f"world_{name}", adapters, side)
    settings = loft_settings(steps)
    rows = {"together": time_row(train_image_adapters, sd, shots, settings, scratch / name / "together"),
            "one_at_a_time": time_row(train_image_adapters, sd, shots, settings, scratch / name / "alone",
                                      together=False)}
    if with_reload:
        rows["reload_per_adapter"] = time_row(train_adapters, sd, shots, settings, scratch / name / "reload")
    return [{"size": name, "row": row, "adapters": adapters, "steps": steps, "wall_s": wall,
             "ratio_to_together": wall / rows["together"]} for row, wall in rows.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results-loft-batched.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        rows = [row for size in args.sizes for row in bench_size(size, Path(scratch))]
    print(f"{'size':<10} {'row':<20} {'adapters':>8} {'steps':>5} {'wall_s':>8} {'x together':>10}")
    for row in rows:
        print(f"{row['size']:<10} {row['row']:<20} {row['adapters']:>8} {row['steps']:>5} {row['wall_s']:>8.1f}"
              f" {row['ratio_to_together']:>10.2f}")
    result = {"rows": rows, "threads": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__,
              "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average {load_before:.1f} before, {result['load_average_after']:.1f} after; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
