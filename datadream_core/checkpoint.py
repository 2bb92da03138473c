"""Resumable training checkpoints: the optimizer's state and the run's own, saved atomically with the fingerprint
of everything the run is made from, and resumed only while that fingerprint matches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from datadream_core.io import LOG, atomic_path

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, fingerprint: str, optimizer, scaler, params: Sequence | None = None,
                    schedule=None, **state: Any) -> None:
    """Save the optimizer, the gradient scaler (None: none), the trained `params` and learning-rate `schedule`
    where given, and the run's own `state`."""
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler else None,
                    "params": [param.detach().cpu() for param in params] if params is not None else None,
                    "schedule": schedule.state_dict() if schedule is not None else None, **state}, tmp)


def load_checkpoint(path: str | os.PathLike, fingerprint: str, optimizer, scaler, *keys: str,
                    params: Sequence | None = None, schedule=None) -> dict | None:
    """The run's state (`keys`) saved at `path` for `fingerprint`, with the optimizer, scaler, `params` and
    `schedule` restored from it; None when there is none, or it was made from other settings or inputs.

    Loads tensors and plain containers only (`weights_only=True`): whoever can write results/ must not get code
    run at resume. A file that does not load or lacks a key (torn by a crash, or not ours) is renamed to
    `<name>.corrupt`, so the job starts clean instead of failing the same way on every retry.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict):
            raise TypeError(f"holds a {type(saved).__name__}, not a dict")
        missing = [key for key in ("fingerprint", "optimizer", "scaler", "params", "schedule", *keys)
                   if key not in saved]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
    except Exception as exc:  # any unloadable file is set aside the same way, whatever tore it
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        LOG.warning("checkpoint %s does not load (%s: %s): moved to %s, starting from scratch", path,
                    type(exc).__name__, exc, aside)
        return None
    if saved["fingerprint"] != fingerprint:
        LOG.warning("checkpoint %s belongs to other settings or inputs: starting over", path)
        return None
    optimizer.load_state_dict(saved["optimizer"])
    if scaler and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    if params is not None:
        with torch.no_grad():
            for param, value in zip(params, saved["params"]):
                param.copy_(value)
    if schedule is not None:
        schedule.load_state_dict(saved["schedule"])
    return saved
