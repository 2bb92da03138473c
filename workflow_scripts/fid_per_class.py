"""Snakemake adapter: per-class and dataset-level FID of one generator's synthetic images."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.metrics.fid import load_real_features, make_extractor, per_class_fid, write_per_class_fid  # noqa: E402

params, wildcards = snakemake.params, snakemake.wildcards
fid = params.settings
extractor = make_extractor(fid["features"], fid["inception_weights"], fid["name"], fid["pretrained"])
real_features, real_classes = load_real_features(snakemake.input.real, fid["features"])
results, summary = per_class_fid(snakemake.input.manifest, snakemake.input.classes, real_features, real_classes,
                                 extractor, fid["batch_size"], workers=snakemake.threads, per_class=params.n_synth)
run = {"dataset": wildcards.dataset, "generator": wildcards.generator, "shots": int(wildcards.shots),
       "seed": int(wildcards.seed), "real_split": fid["real_split"], "feature_model": fid["model_identity"]}
write_per_class_fid(results, {**summary, **run}, snakemake.output.per_class, snakemake.output.summary)
log.info("dataset FID %s, mean per-class FID %s", summary["dataset_fid"], summary["mean_per_class_fid"])
