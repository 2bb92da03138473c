"""Snakemake adapter: train the dataset-wide adapter, or the per-class adapters of a chunk of classes."""

from pathlib import Path

from datadream_core.config import job_settings, section
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import read_classes
from datadream_core.dream import DreamSettings, Example, train_datadream
from datadream_core.identity import with_data_identity
from datadream_core.jobs import start_snakemake_job
from datadream_core.layout import ADAPTER_FILES

# The outputs come in pairs per adapter (weights, train.json); the weights name its folder.
out_dirs = [Path(path).parent for path in snakemake.output[::len(ADAPTER_FILES)]]
log = start_snakemake_job(snakemake, owned=out_dirs)
params = snakemake.params
settings = section(DreamSettings, job_settings(params.settings, params.neutral))
classes = read_classes(snakemake.input.classes)
shots = read_fewshot(snakemake.input.fewshot, int(snakemake.wildcards.shots))
seed = int(snakemake.wildcards.seed)
made_from = with_data_identity(params.made_from, snakemake.input.identity)
chunk = params.chunk.values["classes"]
scopes = [0] if chunk is None else [index + 1 for index in chunk]

for out_dir, scope in zip(out_dirs, scopes):
    selected = shots if scope == 0 else [shot for shot in shots if shot.class_index == scope - 1]
    examples = [Example(shot.path, classes[shot.class_index].prompt) for shot in selected]
    summary = train_datadream(params.sd_location.values["path"], examples, out_dir, settings, seed=seed, scope=scope,
                              sd_revision=params.sd_location.values["revision"], made_from=made_from)
    log.info("%s: %d images, %d steps in %.1f s, final loss %.4f", out_dir, len(examples), summary["steps"],
             summary["wall_seconds"], summary["final_loss"])
