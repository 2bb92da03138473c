"""Snakemake adapter: generate one shard of one class's synthetic images."""

from pathlib import Path

import torch

from datadream_core.config import section
from datadream_core.data.table import read_classes
from datadream_core.jobs import start_job
from datadream_core.synth.sampler import ShardJob, run_shard, shard_range
from datadream_core.synth.text2img import SamplingSettings, load_text2img, text2img_renderer

log = start_job(snakemake.log[0], snakemake.threads)
wildcards = snakemake.wildcards
config = snakemake.config
settings = section(SamplingSettings, config["synth"])
class_index = int(wildcards.cls)
prompt = read_classes(snakemake.input.classes)[class_index].prompt
start, stop = shard_range(snakemake.params.n_images, config["synth"]["shard_size"], int(wildcards.shard))
job = ShardJob(wildcards.generator, class_index, prompt, int(wildcards.seed), start, stop)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
lora_dir = str(Path(snakemake.input.lora).parent) if snakemake.input.lora else None
pipe = load_text2img(config["models"]["sd"]["path"], lora_dir, settings, device)
rows = run_shard(job, text2img_renderer(pipe, settings), Path(snakemake.output[0]).parent, settings.batch_size)
log.info("%s class %d: images %d-%d ready", wildcards.generator, class_index, start, stop - 1)
