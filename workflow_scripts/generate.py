"""Snakemake adapter: generate one shard of the synthetic images of a chunk of classes."""

from pathlib import Path

import torch

from datadream_core.chunks import shard_range
from datadream_core.config import job_settings
from datadream_core.identity import with_data_identity
from datadream_core.jobs import start_snakemake_job
from datadream_core.synth.disef import attempt_summary
from datadream_core.synth.generate import ShardRequest, generate_shards

log = start_snakemake_job(snakemake)
wildcards, params, inputs = snakemake.wildcards, snakemake.params, snakemake.input
settings = job_settings(params.settings, params.neutral)
classes, shard = params.chunk.values["classes"], params.chunk.values["shard"]
start, stop = shard_range(settings["n_images"], settings["shard_size"], shard)
adapter_dirs = [str(Path(path).parent) for path in inputs.loras]
if wildcards.generator == "datadream_dset":
    adapters = dict.fromkeys(classes, adapter_dirs)
else:  # in class order: one adapter per class (datadream_cls) or K per class (loft)
    per_class = len(adapter_dirs) // len(classes)
    adapters = {index: adapter_dirs[i * per_class:(i + 1) * per_class] for i, index in enumerate(classes)}
made_from = with_data_identity(params.made_from, inputs.identity)
filter_clip = {**params.filter_clip_location.values, **params.filter_clip} if params.filter_clip else None
request = ShardRequest(
    generator=wildcards.generator, seed=int(wildcards.seed), shots=int(wildcards.shots), start=start, stop=stop,
    shard_dirs=dict(zip(classes, snakemake.output)), classes_csv=inputs.classes, settings=settings,
    settings_digest=made_from["settings_digest"], sd_path=params.sd_location.values["path"],
    sd_revision=params.sd_location.values["revision"],
    sd_identity=made_from["model_identity"], data_identity=made_from["data_identity"],
    adapters=adapters, fewshot_csv=next(iter(inputs.fewshot), None), captions_csv=next(iter(inputs.captions), None),
    filter_clip=filter_clip)
header, rows = generate_shards(request, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
if wildcards.generator == "disef":
    for line in attempt_summary([dict(zip(header, row)) for row in rows], settings["disef_max_attempts"]):
        log.info(line)
log.info("%s classes %s shard %d: %d images ready", wildcards.generator, classes, shard, len(rows))
