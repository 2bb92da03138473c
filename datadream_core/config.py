"""Typed configuration: JSON-schema validation with clear messages, defaults from the schema.

The Snakefile validates with `snakemake.utils.validate` against the same schema file; direct Python
users call `load_config` / `validate_config`, which raise `ConfigError` naming the key path at fault.
"""

from __future__ import annotations

import copy
import string
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

SCHEMA_FILE = Path(str(resources.files("datadream_core") / "config.schema.yaml"))


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names the key path."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))


PROMPT_FIELDS = ("domain", "name")


def _is_integer(checker, instance) -> bool:
    # JSON Schema calls 60.0 an integer; Python does not (range(60.0) fails), so neither do we.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _with_defaults(validator_class):
    """Extend a validator so that validating also fills in `default:` values, outermost first,
    and accepts only true integers where the schema asks for one."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults},
                                        type_checker=validator_class.TYPE_CHECKER.redefine("integer", _is_integer))


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for part in error.absolute_path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}" if parts else str(part))
    return "".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    path = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed) if isinstance(error.instance, dict) else []
        prefix = "" if path == "<top level>" else path + "."
        names = ", ".join(f"'{prefix}{key}'" for key in unknown)
        hint = f" (known keys: {', '.join(sorted(allowed))})" if allowed else ""
        return f"unknown config key {names}{hint}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        prefix = "" if path == "<top level>" else path + "."
        return f"missing required config key '{prefix}{missing}'"
    return f"config key '{path}': {error.message}"


def validate_config(config: Mapping[str, Any]) -> dict:
    """Return a validated deep copy of `config` with schema defaults filled in."""
    resolved = copy.deepcopy(dict(config))
    schema = load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("; ".join(_describe(error) for error in errors))
    _check_overrides(resolved, schema)
    _check_consistency(resolved)
    return resolved


# Sections a dataset may override (`datasets.<name>.overrides`).
OVERRIDABLE_SECTIONS = ("dream", "synth", "classify", "fid")
# Keys that decide which runs exist: a dataset may not override them, or the tables would compare different
# sets of runs across datasets.
RUN_KEYS = {"dream": {"modes"}, "synth": {"generators", "n_synth"}, "classify": {"trainsets", "methods", "search"}}
# Keys that shape the DAG rather than any one job's outputs: which runs exist, and how many classes one job
# takes. No job's settings hold them.
DAG_KEYS = {**RUN_KEYS, "dream": RUN_KEYS["dream"] | {"classes_per_job"},
            "synth": RUN_KEYS["synth"] | {"classes_per_job"}}


def _check_overrides(config: dict, schema: dict) -> None:
    for name, dataset in config["datasets"].items():
        for section_name, values in (dataset.get("overrides") or {}).items():
            where = f"datasets.{name}.overrides.{section_name}"
            shared = sorted(set(values) & RUN_KEYS.get(section_name, set()))
            if shared:
                raise ConfigError(f"config key '{where}.{shared[0]}' cannot be set per dataset: it decides which runs"
                                  f" the tables compare; set '{section_name}.{shared[0]}' for all datasets")
            merged = {**config[section_name], **values}
            validator = _with_defaults(jsonschema.Draft202012Validator)(schema["properties"][section_name])
            errors = sorted(validator.iter_errors(merged), key=lambda e: list(map(str, e.absolute_path)))
            if errors:
                message = "; ".join(_describe(error) for error in errors)
                raise ConfigError(f"{where}: {message}")


def dataset_section(config: Mapping[str, Any], dataset: str, name: str) -> dict:
    """Section `name` as dataset `dataset` runs it: the global section with the dataset's overrides on top."""
    overrides = (config["datasets"][dataset].get("overrides") or {}).get(name, {})
    return {**config[name], **overrides}


def job_section(config: Mapping[str, Any], dataset: str, name: str) -> dict:
    """`dataset_section` less the keys that shape the DAG: the settings a job of that stage may read."""
    return {key: value for key, value in dataset_section(config, dataset, name).items()
            if key not in DAG_KEYS.get(name, ())}


def check_prompt_template(template: str) -> None:
    """Allow `{domain}` and `{name}` only, plain: an unknown field fails only when prompts are made,
    and attribute or index access (`{name.__class__}`) reaches into Python objects."""
    allowed = ", ".join("{" + field + "}" for field in PROMPT_FIELDS)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"config key 'prompt_template': {template!r} is not a valid template ({exc});"
                          f" write literal braces as {{{{ and }}}}") from None
    used = set()
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PROMPT_FIELDS or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"config key 'prompt_template': {shown} in {template!r} is not allowed;"
                              f" the allowed fields are {allowed}, written exactly so")
        used.add(field)
    if "name" not in used:
        raise ConfigError(f"config key 'prompt_template': {template!r} has no {{name}}, so every class would"
                          f" get the same prompt (allowed fields: {allowed})")


def _check_consistency(config: dict) -> None:
    check_prompt_template(config["prompt_template"])
    for name, dataset in config["datasets"].items():
        if dataset["source"] in ("imagefolder", "coop") and "root" not in dataset:
            raise ConfigError(f"missing required config key 'datasets.{name}.root' (source '{dataset['source']}')")
    if config["classify"]["search"] and config["classify"]["selection"] != "val":
        raise ConfigError("config key 'classify.search' needs classify.selection: val (points are chosen on validation accuracy)")
    classify = config["classify"]
    budgets = {"classify.steps": classify["steps"], "classify.coop.steps": classify["coop"].get("steps"),
               "classify.vpt.steps": classify["vpt"].get("steps")}
    budgeted = [key for key, steps in budgets.items() if steps is not None]
    if classify["search"].get("epochs") and budgeted:
        raise ConfigError(f"config key 'classify.search.epochs' searches epochs, but '{budgeted[0]}' sets a step"
                          " budget that replaces them; search 'steps' instead, or set it to null")
    unknown = sorted(set(config["scaling"]["generators"] or []) - set(config["synth"]["generators"]))
    if unknown:
        raise ConfigError(f"config key 'scaling.generators' names {', '.join(unknown)}, which synth.generators does not run")
    unknown = sorted(set(config["scaling"]["datasets"] or []) - set(config["datasets"]))
    if unknown:
        raise ConfigError(f"config key 'scaling.datasets' names {', '.join(unknown)}, which `datasets` does not define")
    for name, dataset in config["datasets"].items():
        if dataset.get("class_names") == "released" and dataset["source"] != "coop":
            raise ConfigError(f"config key 'datasets.{name}.class_names': 'released' names exist for coop sources only")


def load_config(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def fewshot_size(config: Mapping[str, Any]) -> int:
    """Images per class in each nested few-shot list: the largest K anywhere in the config."""
    return max(list(config["shots"]) + list(config["scaling"]["shots"]))


def synth_count(config: Mapping[str, Any]) -> int:
    """Images generated per class: enough for the main tables and every scaling point."""
    return max([config["synth"]["n_synth"]] + list(config["scaling"]["n_synth"]))


def dream_mode_settings(dream: Mapping[str, Any], mode: str) -> dict:
    """The dream settings of one adapter kind: DataDream's mode dset (dset_epochs, when set, replaces epochs) or cls,
    or loft (LoFT's per-image adapters: dream.loft's keys replace dream's own)."""
    settings = dict(dream)
    dset_epochs = settings.pop("dset_epochs")
    loft = settings.pop("loft")
    if mode == "dset" and dset_epochs is not None:
        settings["epochs"] = dset_epochs
    if mode == "loft":
        # One image trains at batch 1 whatever batch_size says; diffusers reads a file without alphas as alpha = rank.
        settings.update(loft, batch_size=1, alpha=loft["rank"])
    return canonical(settings)


# Keys proven not to change any output, only how fast a job runs (resume is exact whatever the checkpoint
# interval; image i depends on (seed, class, i) alone whatever the batch; the val cache and loader workers
# return the same pixels). A job's JobSettings leave them out of what Snakemake's rerun check compares.
SPEED_ONLY_KEYS = {
    "dream": frozenset({"checkpoint_every"}),
    "synth": frozenset({"batch_size"}),
    "classify": frozenset({"workers", "eval_cache_mb"}),
}


@dataclass(frozen=True)
class OutputNeutral:
    """A params value that cannot change the job's outputs (where a model lives on disk, which classes a chunk
    job takes: its outputs name them). Snakemake records only params of builtin types for its rerun check, so
    wrapping them here keeps a change to them from replanning anything. The job function gets `values`."""

    values: Any


class JobSettings(dict):
    """Every setting a job reads, one params value: the `determining` ones can change its outputs, the
    `output_neutral` rest (speed keys, where a model lives) cannot. Snakemake's rerun check compares a params
    value by its repr, so the repr shows the determining settings only: a change to the rest replans nothing."""

    def __init__(self, values: Mapping[str, Any], output_neutral: Iterable[str] = ()):
        super().__init__(canonical(dict(values)))
        output_neutral = set(output_neutral)
        self.determining = {key: value for key, value in self.items() if key not in output_neutral}

    def __repr__(self) -> str:
        return repr(self.determining)


def canonical(value: Any) -> Any:
    """`value` with every mapping's keys sorted, recursively.

    Snakemake compares a job's params by their repr, and a dict's repr follows its insertion order, which
    follows the order of keys in the config file: two configs with the same values must give the same params.
    """
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(item) for item in value)
    return value


def settings_dataclass(cls, values: Mapping[str, Any]):
    """Build a settings dataclass from a validated config section, ignoring keys it does not use."""
    names = {field.name for field in fields(cls)}
    return cls(**{key: value for key, value in values.items() if key in names})


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of `datasets:` with its key."""

    name: str
    source: str
    root: str | None = None
    coop_name: str | None = None
    domain_word: str | None = None
    class_names: Mapping[str, str] | str | None = None  # a map, or "released"
    num_classes: int | None = None  # coop: the benchmark's first N classes
    split: Mapping[str, Any] | None = None
    world: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> "DatasetSpec":
        return cls.from_entry(name, config["datasets"][name])

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> "DatasetSpec":
        """The readers' view of a `datasets:` entry; its `overrides` are for the later stages."""
        return cls(name=name, **{key: value for key, value in entry.items() if key != "overrides"})

    def source_root(self) -> str | None:
        """The folder holding this dataset's files (None for the rendered miniature world)."""
        from datadream_core.data.sources import COOP_SPECS

        if self.source == "coop":
            return str(Path(self.root) / COOP_SPECS[self.coop_name or self.name].folder)
        return self.root if self.source == "imagefolder" else None
