"""Snakemake adapter: extract the FID features of one dataset's real images once, for every generator."""

from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads, outputs=snakemake.output, attempt=snakemake.resources.get("attempt", 1))

from datadream_core.metrics.fid import compute_real_features, make_extractor  # noqa: E402

params = snakemake.params
extractor = make_extractor(params.features, params.inception_weights, params.clip["name"], params.clip["pretrained"])
compute_real_features(snakemake.input.splits, params.split, extractor, params.batch_size, snakemake.output[0],
                      workers=snakemake.threads)
