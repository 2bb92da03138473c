"""Snakemake adapter: train (unless zero-shot) and test one CLIP classifier (LoRA, CoOp or VPT)."""

from datadream_core.classify.train import run_classifier
from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads)
run_classifier(
    dataset=snakemake.wildcards.dataset,
    trainset=snakemake.params.trainset,
    shots=snakemake.params.shots,
    seed=snakemake.params.seed,
    n_synth=snakemake.params.n_synth,
    classes_csv=snakemake.input.classes,
    splits_csv=snakemake.input.splits,
    fewshot_csv=snakemake.input.get("fewshot"),
    manifest_csv=snakemake.input.get("manifest"),
    clip=snakemake.params.clip,
    classify=snakemake.params.classify,
    metrics_json=snakemake.output.metrics,
    per_class_csv=snakemake.output.per_class,
)
