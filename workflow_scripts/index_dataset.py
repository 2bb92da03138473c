"""Snakemake adapter: index a dataset source into classes.csv, splits.csv and problems.csv."""

from datadream_core.config import DatasetSpec
from datadream_core.data.build import index_and_write
from datadream_core.data.images import ImageLimits
from datadream_core.io import write_json
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
params = snakemake.params
spec = DatasetSpec.from_entry(snakemake.wildcards.dataset, {**params.entry, **params.root.values})
world_dir = snakemake.input[1] if spec.source == "miniworld" else None
index = index_and_write(spec, params.prompt_template, snakemake.output.classes, snakemake.output.splits,
                        snakemake.output.problems, world_dir, verify=params.verify_images, workers=snakemake.threads,
                        limits=ImageLimits(params.max_megapixels, params.min_image_side),
                        needs=params.needs.values["needs"])
write_json(snakemake.output.identity, {"data_identity": params.data})
counts = index.split_counts()
log.info("%s (%s): %d classes; train/val/test images %d/%d/%d; %d files left out (problems.csv)", spec.name,
         params.data, len(index.classes), counts["train"].sum(), counts["val"].sum(), counts["test"].sum(),
         len(index.problems))
