"""What every stage's benchmark shares: the sizes of the work, the context of a run and the table rows."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Comparison

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Work:
    """Sizes of the work of every stage; `quick` (tiny), `full` (tiny, more repetitions) or `real` (real size)."""

    name: str
    real_size: bool = False
    reps: int = 5
    # LoRA training: one cls adapter (all images of one class, one prompt)
    lora_images: int = 16
    lora_image_size: tuple[int, int] = (500, 375)
    lora_epochs: int = 2
    lora_batch: int = 8
    lora_resolution: int | None = None
    # generation: one cls-mode job
    gen_classes: int = 8
    gen_images: int = 2
    gen_steps: int = 50
    gen_batch: int = 10
    gen_resolution: int | None = None
    gen_reps: int = 3
    gen_warmup: bool = False  # the job's first run of each path is timed too (it also samples peak memory)
    gen_parts: bool = True  # the job's two parts as rows of their own: adapter switch, fused vs unfused sampling
    # classifier: class counts of the evaluation and training rows (100 ~ Caltech/Aircraft/Flowers, 1000 = ImageNet)
    eval_classes: tuple[int, ...] = (100, 1000)
    eval_images: int = 160
    eval_image_size: tuple[int, int] = (500, 375)  # test photos of the CoOp datasets' typical size
    eval_epochs: int = 10  # evaluations in one classifier run (one per epoch; paper.yaml trains 60 epochs)
    train_classes: tuple[int, ...] = (100, 1000)
    train_batch: int = 64
    train_steps: int = 3
    # FID: (dimension, repetitions); one repetition means no warm-up run
    fid: list[tuple[int, int]] = field(default_factory=lambda: [(512, 3), (2048, 1)])
    dag_reps: int = 1


QUICK = Work("quick")
FULL = Work("full", reps=7, gen_reps=5, gen_warmup=True, lora_epochs=3, eval_images=512, train_steps=5,
            fid=[(512, 5), (2048, 3)], dag_reps=3)
# Real-size architectures with random weights: reduced work so a CPU finishes (each row records its work).
REAL_CPU = Work("real", real_size=True, reps=1, lora_images=4, lora_image_size=(320, 256), lora_epochs=1, lora_batch=2,
                lora_resolution=256, gen_classes=3, gen_images=1, gen_steps=4, gen_batch=1, gen_resolution=256,
                gen_reps=1, eval_classes=(100,), eval_images=16, eval_epochs=2, train_classes=(100,), train_batch=8,
                train_steps=1, fid=[])
# On a GPU: the paper's resolution, batch sizes and sampler steps (not run yet: no GPU in this task).
REAL_GPU = Work("real", real_size=True, reps=3, lora_images=16, lora_image_size=(640, 512), lora_epochs=2,
                lora_resolution=512, gen_classes=8, gen_images=10, gen_steps=50, gen_batch=10, gen_reps=2,
                eval_images=1024, eval_epochs=3, train_batch=64, train_steps=5, fid=[])


@dataclass
class Context:
    root: Path
    device: torch.device
    work: Work
    seed: int = 0

    def dir(self, *names: str) -> Path:
        path = self.root.joinpath(self.work.name, *names)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tag(self) -> str:
        return "real" if self.work.real_size else "tiny"


def table_row(stage: str, comparison: Comparison, unit: str, equal: bool, equal_text: str, work: dict, **extra) -> dict:
    return {"stage": stage, "unit": unit, "ours_median_s": comparison.ours_median,
            "reference_median_s": comparison.reference_median, "speedup": comparison.speedup,
            "ours_s": comparison.ours_s, "reference_s": comparison.reference_s,
            "rep_speedups": comparison.rep_speedups,
            "paired_speedup_median": float(np.median(comparison.rep_speedups)),
            "peak_mb": {"ours": comparison.ours_mb, "reference": comparison.reference_mb},
            "outputs_equal": bool(equal), "equal_text": equal_text, "work": work, **extra}


def ceiling_row(stage: str, comparison: Comparison, unit: str, floor: str) -> dict:
    """The required model compute alone (`floor`, timed in the same rotation as the two paths) against the
    reference: no path doing this work at this precision can beat that ratio on this machine."""
    floor_median = float(np.median(comparison.floor_s))
    return {"stage": f"ceiling: {stage}", "unit": unit, "ours_median_s": floor_median,
            "reference_median_s": comparison.reference_median, "speedup": comparison.reference_median / floor_median,
            "ours_s": comparison.floor_s, "reference_s": comparison.reference_s,
            "rep_speedups": [r / f for f, r in zip(comparison.floor_s, comparison.reference_s)], "peak_mb": {},
            "outputs_equal": None, "equal_text": "n/a (floor: model compute only)", "work": {"floor": floor},
            "ceiling": True}


def fresh(base: Path):
    """A callable giving a new empty folder under `base` per call (generation skips existing images)."""
    counter = iter(range(10**9))

    def make() -> Path:
        path = base / f"run{next(counter):04d}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    return make
