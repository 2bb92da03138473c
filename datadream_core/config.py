"""Typed configuration: JSON-schema validation with clear messages, defaults from the schema.

The Snakefile validates with `snakemake.utils.validate` against the same schema file; direct Python
users call `load_config` / `validate_config`, which raise `ConfigError` naming the key path at fault.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

SCHEMA_FILE = Path(str(resources.files("datadream_core") / "config.schema.yaml"))


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names the key path."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))


def _with_defaults(validator_class):
    """Extend a validator so that validating also fills in `default:` values, outermost first."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


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
    _check_consistency(resolved)
    return resolved


def _check_consistency(config: dict) -> None:
    for name, dataset in config["datasets"].items():
        if dataset["source"] in ("imagefolder", "coop") and "root" not in dataset:
            raise ConfigError(f"missing required config key 'datasets.{name}.root' (source '{dataset['source']}')")
    if config["classify"]["search"] and config["classify"]["selection"] != "val":
        raise ConfigError("config key 'classify.search' needs classify.selection: val (points are chosen on validation accuracy)")
    unknown = sorted(set(config["scaling"]["generators"] or []) - set(config["synth"]["generators"]))
    if unknown:
        raise ConfigError(f"config key 'scaling.generators' names {', '.join(unknown)}, which synth.generators does not run")


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


def section(cls, values: Mapping[str, Any]):
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
    class_names: Mapping[str, str] | None = None
    split: Mapping[str, Any] | None = None
    world: Mapping[str, Any] | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> "DatasetSpec":
        return cls(name=name, **config["datasets"][name])
