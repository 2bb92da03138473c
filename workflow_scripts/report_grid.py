"""Snakemake adapter: one dataset's sample grid, real shots beside every generator's images (Fig. 1, 3)."""

from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)

from datadream_core.data.table import read_classes  # noqa: E402
from datadream_core.report.grids import manifest_samples, real_shots, sample_grid  # noqa: E402

params = snakemake.params
generated = {generator: manifest_samples(snakemake.input[generator]) for generator in params.generators}
sample_grid(read_classes(snakemake.input.classes), real_shots(snakemake.input.fewshot, params.shots), generated,
            snakemake.output[0], f"{snakemake.wildcards.dataset}: {params.shots} real shots and synthetic samples"
            f" (seed {params.seed})", params.images, params.classes)
