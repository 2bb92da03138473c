"""Snakemake adapter: index a dataset source into classes.csv, splits.csv and problems.csv."""

from datadream_core.config import DatasetSpec
from datadream_core.data.build import index_and_write
from datadream_core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads, attempt=snakemake.resources.get("attempt", 1))
spec = DatasetSpec.from_config(snakemake.config, snakemake.wildcards.dataset)
index = index_and_write(spec, snakemake.config["prompt_template"], snakemake.output.classes, snakemake.output.splits,
                        snakemake.output.problems, "results", verify=snakemake.config["data"]["verify_images"],
                        workers=snakemake.threads, max_megapixels=snakemake.config["data"]["max_megapixels"])
counts = index.split_counts()
log.info("%s: %d classes; train/val/test images %d/%d/%d; %d files left out (problems.csv)", spec.name,
         len(index.classes), counts["train"].sum(), counts["val"].sum(), counts["test"].sum(), len(index.problems))
