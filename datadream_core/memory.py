"""Host memory asks (`mem_mb`) of the model rules, from their peak resident memory at the paper's size.

The peaks are the rehearsal's (`make rehearse`, docs/rehearsal.md): every model job of configs/paper.yaml on
the real-size architectures, on a CPU, recorded by Snakemake's `benchmark:` and tabulated by
benchmarks/rehearsal.py into benchmarks/results-rehearsal.json (tests/test_rehearsal.py keeps the two equal).
A CPU run holds the weights and the activations in host memory, so its peak bounds a GPU job's host memory,
where the activations live on the GPU. The ask is HEADROOM times the peak (plus what grows with the data beyond
the rehearsal's few images), rounded up to whole GiB; a retry after an out-of-memory kill asks `attempt` times
as much. The rehearsal trains LoRA under bf16 with bf16 frozen weights; paper.yaml's fp32 LoRA job holds 2.6 GB
more weights (the UNet and text encoder in fp32) on the host before they move to the GPU, inside the headroom.
"""

from __future__ import annotations

import math
from typing import Callable

HEADROOM = 1.5
# Rule family -> the largest peak RSS (MB) of its jobs over the rehearsals in benchmarks/results-rehearsal.json.
# LoFT's per-image adapters and the search points run the cls adapters' and the classifier's code and models.
REHEARSAL_PEAK_MB = {
    "train_lora_dset": 6673,
    "train_lora_cls": 7662,
    "caption_shots": 1957,
    "generate": 7912,
    "train_classifier": 6787,
    "evaluate_zeroshot": 4091,
    "fid_real_features": 1132,
    "fid_per_class": 1311,
}
SAME_CODE_AS = {"train_lora_image": "train_lora_cls", "train_search_point": "train_classifier"}
# What grows with the dataset beyond the rehearsal's few images and is not covered by the headroom: the FID
# jobs hold one 2048-d float32 row per real test image, twice while concatenating (ImageNet's 50,000: 0.8 GB).
DATA_ALLOWANCE_MB = {"fid_real_features": 1024, "fid_per_class": 1024}


def memory_ask_mb(rule: str, attempt: int = 1) -> int:
    """mem_mb of a job of `rule` (a rule family) on its `attempt`: HEADROOM x its rehearsal peak plus its data
    allowance, rounded up to whole GiB."""
    family = SAME_CODE_AS.get(rule, rule)
    need = HEADROOM * REHEARSAL_PEAK_MB[family] + DATA_ALLOWANCE_MB.get(family, 0)
    return math.ceil(need / 1024) * 1024 * attempt


def memory_ask(rule: str) -> Callable:
    """`memory_ask_mb` as a rule's `resources: mem_mb=` callable."""
    return lambda wildcards, attempt: memory_ask_mb(rule, attempt)
