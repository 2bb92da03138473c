"""Train set names and per-method settings, torch-free so that the Snakefile can use them.

A train set is zeroshot, real, synth_{g} or real+synth_{g}; a classifier method other than LoRA follows
it after a slash (`real/coop`, `real+synth_sd/vpt`). LoRA, the paper's classifier, has the bare names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from datadream_core.config import DAG_KEYS

KINDS = ("zeroshot", "real", "synth", "real+synth")
METHODS = ("lora", "coop", "vpt")
DEFAULT_METHOD = "lora"


@dataclass(frozen=True)
class TrainSet:
    name: str
    uses_real: bool
    generator: str | None
    method: str = DEFAULT_METHOD

    @property
    def trains(self) -> bool:
        return self.uses_real or self.generator is not None


def parse_trainset(name: str) -> TrainSet:
    data, _, method = name.partition("/")
    method = method or DEFAULT_METHOD
    if method not in METHODS or (method == DEFAULT_METHOD and "/" in name):
        raise ValueError(f"unknown classifier method in train set '{name}' (known: "
                         f"{', '.join(m for m in METHODS if m != DEFAULT_METHOD)} after a slash; LoRA has no suffix)")
    if data == "zeroshot" and method != DEFAULT_METHOD:
        raise ValueError(f"train set '{name}': zero-shot CLIP trains nothing, so it takes no method")
    if data in ("zeroshot", "real"):
        return TrainSet(name, data == "real", None, method)
    for prefix in ("real+synth_", "synth_"):
        if data.startswith(prefix) and len(data) > len(prefix):
            return TrainSet(name, prefix == "real+synth_", data[len(prefix):], method)
    raise ValueError(f"unknown train set '{name}' (expected zeroshot, real, synth_<generator> or real+synth_<generator>,"
                     " optionally followed by /coop or /vpt)")


def with_method(trainset: str, method: str) -> str:
    return trainset if method == DEFAULT_METHOD else f"{trainset}/{method}"


def trainset_names(kinds: Iterable[str], generators: Iterable[str], method: str = DEFAULT_METHOD) -> list[str]:
    """One name per kind, the synthetic kinds once per generator; zero-shot only under LoRA (it trains nothing)."""
    names = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown train set kind '{kind}' (known: {', '.join(KINDS)})")
        if kind == "zeroshot" and method != DEFAULT_METHOD:
            continue
        names.extend([kind] if kind in ("zeroshot", "real") else [f"{kind}_{generator}" for generator in generators])
    return [with_method(name, method) for name in names]


def method_kinds(classify: Mapping[str, Any], method: str) -> list[str]:
    """The train set kinds a method trains on: `classify.trainsets` for LoRA, its own `trainsets` otherwise."""
    return list(classify["trainsets"] if method == DEFAULT_METHOD else classify[method]["trainsets"])


def classifier_trainsets(classify: Mapping[str, Any], generators: Iterable[str], methods: Iterable[str] | None = None,
                         kinds: Iterable[str] = KINDS) -> list[str]:
    """The train set names of `methods` (default: every configured one) of the configured kinds among `kinds`."""
    generators, kinds = list(generators), set(kinds)
    return [name for method in (classify["methods"] if methods is None else methods)
            for name in trainset_names([kind for kind in method_kinds(classify, method) if kind in kinds], generators,
                                       method)]


def epochs_for_shots(epochs: int, epochs_by_shots: Mapping[str, int], shots: int) -> int:
    """The entry of `epochs_by_shots` with the largest K at most `shots`, else `epochs`."""
    fitting = [int(k) for k in epochs_by_shots if int(k) <= shots]
    return int(epochs_by_shots[str(max(fitting))]) if fitting else int(epochs)


def method_settings(classify: Mapping[str, Any], method: str, shots: int,
                    overrides: Mapping[str, Any] | None = None) -> dict:
    """The settings one classifier job trains with: the shared `classify` keys, overridden by the method's own
    section (`classify.coop`, `classify.vpt`) and then by `overrides` (a search point), with the budget rule
    applied: `steps` when set (epochs then play no part), else the epochs for K.

    The method's own keys that are not shared (context_tokens, prompt_tokens, ...) keep their names; the other
    methods' sections, the planning keys and the search grid are left out, so that a job's settings change only
    when something that job uses changes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown classifier method '{method}' (known: {', '.join(METHODS)})")
    resolved = {key: value for key, value in classify.items() if key not in METHODS and key not in DAG_KEYS["classify"]}
    own = classify.get(method, {}) if method != DEFAULT_METHOD else {}
    resolved.update({key: value for key, value in own.items() if key not in DAG_KEYS["classify"]})
    resolved.update(overrides or {})
    resolved["method"] = method
    if "epochs" not in (overrides or {}):
        resolved["epochs"] = epochs_for_shots(resolved["epochs"], resolved.get("epochs_by_shots") or {}, shots)
    resolved.pop("epochs_by_shots", None)
    if resolved.get("steps") is not None:
        resolved["epochs"] = None  # the step budget decides; epochs must not make the job rerun
    return resolved


SEARCH_KEYS = {"learning_rate": "lr", "epochs": "ep", "steps": "st", "weight_decay": "wd"}


def search_points(search: Mapping[str, Iterable]) -> dict[str, dict]:
    """The grid of `classify.search` as {point name: settings overrides}, in grid order (learning rate outermost).

    A point's name spells its values (`lr0.001_ep20_wd0.0001`), so its folder says what it trained with.
    """
    axes = [(key, list(search[key])) for key in SEARCH_KEYS if search.get(key)]
    points: list[dict] = [{}]
    for key, values in axes:
        points = [{**point, key: value} for point in points for value in values]
    return {"_".join(f"{SEARCH_KEYS[key]}{value}" for key, value in point.items()): point for point in points if point}
