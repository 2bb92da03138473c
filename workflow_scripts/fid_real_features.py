"""Snakemake adapter: extract the FID features of one dataset's real images once, for every generator."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.metrics.fid import compute_real_features, make_extractor  # noqa: E402

fid = snakemake.params.settings
extractor = make_extractor(fid["features"], fid["inception_weights"], fid["name"], fid["pretrained"])
compute_real_features(snakemake.input.splits, fid["real_split"], extractor, fid["batch_size"], snakemake.output[0],
                      workers=snakemake.threads)
