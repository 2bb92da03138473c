"""Snakemake adapter: generate one shard of the synthetic images of a chunk of classes."""

from datadream_core.identity import with_data_identity
from datadream_core.jobs import start_snakemake_job
from datadream_core.synth.generate import run_generation_job

start_snakemake_job(snakemake)
wildcards, params, inputs = snakemake.wildcards, snakemake.params, snakemake.input
run_generation_job(
    generator=wildcards.generator,
    seed=int(wildcards.seed),
    shots=int(wildcards.shots),
    classes=params.chunk.values["classes"],
    shard=params.chunk.values["shard"],
    shard_dirs=list(snakemake.output.shards),
    classes_csv=inputs.classes,
    settings=params.settings,
    provenance=with_data_identity(params.provenance, inputs.identity),
    sd_location=params.sd_location.values,
    adapter_weights=list(inputs.loras),
    fewshot_csv=next(iter(inputs.fewshot), None),
    captions_csv=next(iter(inputs.captions), None),
    filter_clip_location=params.filter_clip_location.values,
    filter_clip=params.filter_clip,
)
