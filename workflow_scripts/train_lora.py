"""Snakemake adapter: train the dataset-wide adapter, or the per-class adapters of a chunk of classes."""

from pathlib import Path

from datadream_core.chunks import chunk_classes
from datadream_core.config import section
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import read_classes
from datadream_core.dream import LORA_FILE, DreamSettings, Example, finished_adapter_matches, run_identity, train_datadream
from datadream_core.io import write_json
from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads)
wildcards = snakemake.wildcards
settings = section(DreamSettings, snakemake.config["dream"])
sd_path = snakemake.config["models"]["sd"]["path"]
classes = read_classes(snakemake.input.classes)
shots = read_fewshot(snakemake.input.fewshot, int(wildcards.shots))


def train(selected, out_dir, scope):
    examples = [Example(shot.path, classes[shot.class_index].prompt) for shot in selected]
    if finished_adapter_matches(out_dir, run_identity(sd_path, examples, settings, int(wildcards.seed), scope)):
        log.info("%s: adapter already trained with these settings", out_dir)
        return
    summary = train_datadream(sd_path, examples, out_dir, settings, seed=int(wildcards.seed), scope=scope,
                              sd_revision=snakemake.config["models"]["sd"]["revision"])
    log.info("%s: %d images, %d steps in %.1f s, final loss %.4f", out_dir, len(examples), summary["steps"],
             summary["wall_seconds"], summary["final_loss"])


if "chunk" not in wildcards.keys():
    train(shots, Path(snakemake.output[0]).parent, scope=0)
else:
    base = Path(snakemake.params.cls_dir)
    adapters = {}
    for class_index in chunk_classes(wildcards.chunk):
        out_dir = base / f"c{class_index:04d}"
        train([shot for shot in shots if shot.class_index == class_index], out_dir, scope=class_index + 1)
        adapters[class_index] = str(out_dir / LORA_FILE)
    write_json(snakemake.output[0], {"chunk": wildcards.chunk, "adapters": adapters})
