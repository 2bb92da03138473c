"""The cache is honest: a job reruns exactly when a setting that determines its outputs changed, and a setting
that only changes speed replans nothing, on the finished smoke run (model weights, data on disk, moved runs and
deleted outputs: test_cache_local_models.py).

Dry runs (`snakemake -n`) on a finished workflow list the jobs Snakemake would run; each check compares
the planned rules (and their wildcards) with the exact set the change must replan.
"""

from __future__ import annotations

import pytest

from datadream_core.report.compute import STAGE_OF_RULE
from dry_runs import changed, planned_jobs, planned_rules

pytestmark = pytest.mark.e2e


REPORT = {"table_accuracy", "table_fid", "fid_histogram", "sample_grid", "scaling_nsynth", "scaling_shots",
          "training_curves"}
FROM_INDEX = {"index_dataset", "sample_fewshot", "train_lora_dset", "train_lora_cls", "train_lora_image",
              "caption_shots", "generate",
              "merge_manifest", "train_classifier", "evaluate_zeroshot", "file_zeroshot", "fid_real_features",
              "fid_per_class"} | REPORT
FROM_ADAPTERS = {"train_lora_dset", "train_lora_cls", "generate", "merge_manifest", "train_classifier",
                 "fid_per_class"} | REPORT
FROM_IMAGES = {"generate", "merge_manifest", "train_classifier", "fid_per_class"} | REPORT
# the smoke config's scaling runs are DataDream_cls's only: the other generators' images reach no scaling figure
FROM_OTHER_IMAGES = FROM_IMAGES - {"scaling_nsynth", "scaling_shots"}
CLASSIFIERS = {"train_classifier", "table_accuracy", "scaling_nsynth", "scaling_shots", "training_curves"}


# key -> new value -> the exact set of rules the change replans on the finished smoke run
KEY_TABLE = [
    ("data.verify_images", False, FROM_INDEX),
    ("prompt_template", "a {domain}picture of a {name}", FROM_INDEX),
    ("datasets.miniworld.world.test_per_class", 5, {"render_world"} | FROM_INDEX),
    ("dream.epochs", 3, FROM_ADAPTERS),
    ("dream.rank", 8, FROM_ADAPTERS),
    ("dream.loft.epochs", 3, {"train_lora_image"} | FROM_OTHER_IMAGES),
    ("synth.steps", 3, FROM_IMAGES),
    ("synth.disef_strength", 0.5, FROM_OTHER_IMAGES),
    ("classify.learning_rate", 5.0e-4, CLASSIFIERS),
    ("datasets.miniworld.overrides.classify.learning_rate", 5.0e-4, CLASSIFIERS),
    ("classify.eval_batch_size", 32, CLASSIFIERS | {"evaluate_zeroshot", "file_zeroshot"}),
    ("fid.real_split", "val", {"fid_real_features", "fid_per_class", "table_fid", "fid_histogram"}),
    ("report.grid_images", 3, {"sample_grid"}),
    # speed only: nothing is planned
    ("threads.lora", 2, set()),
    ("classify.workers", 1, set()),
    ("classify.eval_cache_mb", 0, set()),
    ("dream.classes_per_job", 1, set()),
    ("dream.checkpoint_every", 1, set()),
    ("synth.classes_per_job", 1, set()),
    ("synth.batch_size", 1, set()),
]


def test_finished_workflow_plans_nothing(smoke_local):
    work, config = smoke_local
    assert planned_rules(work, config) == set()


@pytest.mark.parametrize("key, value, expected", KEY_TABLE, ids=[row[0] for row in KEY_TABLE])
def test_a_changed_key_replans_exactly_its_rules(smoke_local, key, value, expected):
    work, config = smoke_local
    # the compute table sums the model jobs' cost records: it is remade after any model job, and only then
    remade_table = {"compute_table"} if expected & set(STAGE_OF_RULE) else set()
    assert planned_rules(work, changed(config, key, value)) == expected | remade_table


def reversed_keys(value):
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    return value


def test_the_order_of_keys_in_the_config_plans_nothing(smoke_local):
    """Params are compared by their text, so every dict a job gets must not depend on the config's key order."""
    work, config = smoke_local
    assert planned_rules(work, reversed_keys(changed(config, "dream.rank", config["dream"].get("rank", 16)))) == set()


def test_a_generator_only_key_replans_only_that_generator(smoke_local):
    work, config = smoke_local
    jobs = planned_jobs(work, changed(config, "synth.disef_strength", 0.5))
    generated = {wildcards["generator"] for rule, wildcards in jobs if rule in ("generate", "merge_manifest")}
    trained = {wildcards["trainset"] for rule, wildcards in jobs if rule == "train_classifier"}
    assert generated == {"disef"}
    assert trained == {"synth_disef", "real+synth_disef"}
