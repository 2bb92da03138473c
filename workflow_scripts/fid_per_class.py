"""Snakemake adapter: per-class and dataset-level FID of one generator's synthetic images."""

from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads, outputs=snakemake.output, attempt=snakemake.resources.get("attempt", 1))

from datadream_core.metrics.fid import load_real_features, make_extractor, per_class_fid, write_per_class_fid  # noqa: E402

params, wildcards = snakemake.params, snakemake.wildcards
extractor = make_extractor(params.features, params.inception_weights, params.clip["name"], params.clip["pretrained"])
real_features, real_classes = load_real_features(snakemake.input.real, params.features)
results, summary = per_class_fid(snakemake.input.manifest, snakemake.input.classes, real_features, real_classes,
                                 extractor, params.batch_size, workers=snakemake.threads, per_class=params.n_synth)
run = {"dataset": wildcards.dataset, "generator": wildcards.generator, "shots": int(wildcards.shots),
       "seed": int(wildcards.seed), "real_split": params.split}
write_per_class_fid(results, {**summary, **run}, snakemake.output.per_class, snakemake.output.summary)
log.info("dataset FID %s, mean per-class FID %s", summary["dataset_fid"], summary["mean_per_class_fid"])
