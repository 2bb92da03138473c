"""Snakemake adapter: train one DataDream adapter (dataset-wide or for one class)."""

from pathlib import Path

from datadream_core.config import section
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import read_classes
from datadream_core.dream import DreamSettings, Example, train_datadream
from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads)
wildcards = snakemake.wildcards
classes = read_classes(snakemake.input.classes)
shots = read_fewshot(snakemake.input.fewshot, int(wildcards.shots))
if wildcards.scope == "all":
    scope, selected = 0, shots
else:
    class_index = int(wildcards.scope[1:])
    scope, selected = class_index + 1, [shot for shot in shots if shot.class_index == class_index]
examples = [Example(shot.path, classes[shot.class_index].prompt) for shot in selected]
summary = train_datadream(snakemake.config["models"]["sd"]["path"], examples, Path(snakemake.output[0]).parent,
                          section(DreamSettings, snakemake.config["dream"]), seed=int(wildcards.seed), scope=scope)
log.info("trained %s adapter on %d images: %d steps in %.1f s, final loss %.4f", wildcards.scope, len(examples),
         summary["steps"], summary["wall_seconds"], summary["final_loss"])
