# DataDream pipeline: few-shot real images -> adapted Stable Diffusion -> synthetic data -> CLIP classifiers.
# The config comes from profiles/default (config.yaml) unless --configfile names another one.
import os

from snakemake.utils import min_version, validate

min_version("9.19")

from datadream_core.config import SCHEMA_FILE, ConfigError, validate_config
from datadream_core.models.hub import use_model_cache

if not config:
    raise ValueError("no config: run from the repository root (profiles/default names config.yaml) or pass --configfile")
try:
    config.update(validate_config(config))
except ConfigError as error:
    raise ValueError(f"invalid config: {error}") from None
validate(config, schema=str(SCHEMA_FILE))
use_model_cache(config["models"]["cache_dir"])
# Jobs import this checkout's datadream_core, whether they run in the conda environment (envs/, which holds
# only the dependencies) or in a Python that has another copy of it installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/dream.smk"
include: "rules/synth.smk"
include: "rules/classify.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/targets.smk"


# Light bookkeeping runs on the head node, never as a cluster job.
localrules:
    all,
    miniworld_models,
    models,
    fetch_models,
    fewshot,
    loras,
    synth,
    classifiers,
    fid,
    tables,
    report_inputs,
    sample_fewshot,
    merge_manifest,
    file_zeroshot,
    table_accuracy,
    table_fid,
    fid_histogram,
    sample_grid,
    scaling_nsynth,
    scaling_shots,
    compute_table,


# Included files cannot set the default target, so `all` lives here.
rule all:
    default_target: True
    input:
        [dataset_targets(dataset) for dataset in DATASETS],
        report_inputs(),
