"""Snakemake adapter: train (unless zero-shot) and test one CLIP classifier (LoRA, CoOp or VPT)."""

from pathlib import Path

from datadream_core.classify.train import run_classifier
from datadream_core.identity import with_data_identity
from datadream_core.jobs import start_snakemake_job

checkpoint = Path(snakemake.output.metrics).with_name("checkpoint.pt")
log = start_snakemake_job(snakemake, owned=[checkpoint])
params = snakemake.params
run_classifier(
    dataset=snakemake.wildcards.dataset,
    trainset=params.trainset,
    shots=params.shots,
    seed=params.seed,
    n_synth=params.n_synth,
    classes_csv=snakemake.input.classes,
    splits_csv=snakemake.input.splits,
    fewshot_csv=snakemake.input.get("fewshot"),
    manifest_csv=snakemake.input.get("manifest"),
    clip=params.clip_location.values,
    classify=params.settings,
    metrics_json=snakemake.output.metrics,
    per_class_csv=snakemake.output.per_class,
    checkpoint=checkpoint,
    provenance=with_data_identity(params.provenance, snakemake.input.identity),
)
