"""Snakemake adapter: generate one shard of the synthetic images of a chunk of classes."""

from dataclasses import asdict
from pathlib import Path

import torch

from datadream_core.chunks import chunk_classes
from datadream_core.config import section
from datadream_core.data.table import read_classes
from datadream_core.io import read_json, write_csv
from datadream_core.jobs import start_job
from datadream_core.synth.sampler import SHARD_HEADER, ShardJob, file_fingerprint, fingerprint, run_shard, shard_range
from datadream_core.synth.text2img import AdapterSwitcher, SamplingSettings, load_text2img, text2img_renderer

log = start_job(snakemake.log[0], snakemake.threads)
wildcards = snakemake.wildcards
config = snakemake.config
settings = section(SamplingSettings, config["synth"])
classes = read_classes(snakemake.input.classes)
start, stop = shard_range(snakemake.params.n_images, config["synth"]["shard_size"], int(wildcards.shard))
adapters = {}  # class index -> LoRA folder; empty for the unadapted model
for marker in snakemake.input.loras:
    if marker.endswith(".json"):
        adapters.update({int(index): str(Path(path).parent) for index, path in read_json(marker)["adapters"].items()})
    else:
        adapters = dict.fromkeys(range(len(classes)), str(Path(marker).parent))
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
switcher = AdapterSwitcher(load_text2img(config["models"]["sd"]["path"], None, settings, device))
render = text2img_renderer(switcher.pipe, settings)
rows = []
for class_index in chunk_classes(wildcards.chunk):
    adapter = adapters.get(class_index)
    switcher.use(adapter)
    identity = fingerprint(config["models"]["sd"]["path"], asdict(settings),
                           file_fingerprint(Path(adapter) / "pytorch_lora_weights.safetensors") if adapter else None)
    job = ShardJob(wildcards.generator, class_index, classes[class_index].prompt, int(wildcards.seed), start, stop,
                   identity)
    out_dir = Path(snakemake.params.synth_dir) / f"c{class_index:04d}" / f"shard{int(wildcards.shard):03d}"
    rows += run_shard(job, render, out_dir, settings.batch_size)
write_csv(snakemake.output[0], SHARD_HEADER, rows)
log.info("%s %s shard %s: %d images ready", wildcards.generator, wildcards.chunk, wildcards.shard, len(rows))
