"""One module per stage: build the work, run our path and the reference path interleaved, check outputs.

Each stage returns table rows (dicts). Times are per unit of work (the row's `unit`), medians over repetitions.
"""

from benchmarks.stages.classifier import stage_classifier_eval, stage_classifier_train
from benchmarks.stages.common import FULL, QUICK, REAL_CPU, REAL_GPU, Context, Work
from benchmarks.stages.dag import stage_dag
from benchmarks.stages.fid import stage_fid
from benchmarks.stages.generation import stage_generation
from benchmarks.stages.lora import stage_lora

STAGES = {
    "lora": stage_lora,
    "generation": stage_generation,
    "classifier_eval": stage_classifier_eval,
    "classifier_train": stage_classifier_train,
    "fid": stage_fid,
    "dag": stage_dag,
}
__all__ = ["STAGES", "Context", "Work", "QUICK", "FULL", "REAL_CPU", "REAL_GPU"]
