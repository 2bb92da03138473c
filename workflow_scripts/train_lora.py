"""Snakemake adapter: train the dataset-wide adapter, the per-class adapters of a chunk of classes, or the
per-image (LoFT) adapters of a chunk of classes."""

from pathlib import Path

from datadream_core.config import settings_dataclass
from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.table import prompts_of, read_classes
from datadream_core.dream import DreamSettings, adapter_jobs, train_adapters
from datadream_core.image_adapters import train_image_adapters
from datadream_core.identity import with_data_identity
from datadream_core.jobs import start_snakemake_job
from datadream_core.layout import ADAPTER_FILES

# The outputs come in pairs per adapter (weights, train.json); the weights name its folder.
out_dirs = [Path(path).parent for path in snakemake.output.adapters[::len(ADAPTER_FILES)]]
log = start_snakemake_job(snakemake, owned=out_dirs)
params = snakemake.params
settings = settings_dataclass(DreamSettings, params.settings)
prompts = prompts_of(read_classes(snakemake.input.classes))
shots_per_class = params.chunk.values.get("shots_per_class")  # per-image adapters: every listed shot
shots = read_fewshot(snakemake.input.fewshot, shots_per_class or int(snakemake.wildcards.shots))
jobs = adapter_jobs(out_dirs, shots, prompts, params.chunk.values["classes"], per_image=shots_per_class is not None)
provenance = with_data_identity(params.provenance, snakemake.input.identity)
train = train_image_adapters if shots_per_class else train_adapters
summaries = train(params.sd_location.values["path"], jobs, settings, seed=int(snakemake.wildcards.seed),
                  sd_revision=params.sd_location.values["revision"], provenance=provenance)
for job, summary in zip(jobs, summaries):
    log.info("%s: %d images, %d steps in %.1f s, final loss %.4f", job.out_dir, summary["images"], summary["steps"],
             summary["wall_seconds"], summary["final_loss"])
