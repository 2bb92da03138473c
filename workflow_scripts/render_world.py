"""Snakemake adapter: render a miniworld dataset's images and their manifest."""

from datadream_core.data.miniworld import render_world, write_world_manifest
from datadream_core.jobs import start_snakemake_job

log = start_snakemake_job(snakemake)
world = snakemake.params.world
counts = {"train": world["train_per_class"], "val": world["val_per_class"], "test": world["test_per_class"]}
rows = render_world(snakemake.output.images, world["domain"], world["image_size"], counts, world["seed"],
                    world["num_classes"])
write_world_manifest(snakemake.output.manifest, rows)
log.info("rendered %d images", len(rows))
