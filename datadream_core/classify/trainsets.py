"""Train set names, torch-free so that the Snakefile can use them: zeroshot, real, synth_{g}, real+synth_{g}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

KINDS = ("zeroshot", "real", "synth", "real+synth")


@dataclass(frozen=True)
class TrainSet:
    name: str
    uses_real: bool
    generator: str | None

    @property
    def trains(self) -> bool:
        return self.uses_real or self.generator is not None


def parse_trainset(name: str) -> TrainSet:
    if name in ("zeroshot", "real"):
        return TrainSet(name, name == "real", None)
    for prefix in ("real+synth_", "synth_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return TrainSet(name, prefix == "real+synth_", name[len(prefix):])
    raise ValueError(f"unknown train set '{name}' (expected zeroshot, real, synth_<generator> or real+synth_<generator>)")


def trainset_names(kinds: Iterable[str], generators: Iterable[str]) -> list[str]:
    """One name per kind, the synthetic kinds once per generator."""
    names = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown train set kind '{kind}' (known: {', '.join(KINDS)})")
        names.extend([kind] if kind in ("zeroshot", "real") else [f"{kind}_{generator}" for generator in generators])
    return names
