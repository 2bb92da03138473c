"""CLIP through open_clip: a model name plus a pretrained tag or file, or a local open_clip folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from datadream_core.models import ModelNotAvailable


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenize: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _cached_pretrained_file(name: str, tag: str) -> str | None:
    """The local file of an open_clip pretrained tag if it is already cached, else None."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise ModelNotAvailable(
            f"open_clip has no pretrained tag '{tag}' for '{name}' (known: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})")
    if cfg.get("hf_hub"):
        repo_id = "/".join(cfg["hf_hub"].rstrip("/").split("/")[:2])
        for candidate in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors"):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str):
                return found
    return None


def _source(name: str, pretrained: str) -> tuple[str, str | None]:
    """(model_name, pretrained) for open_clip.create_model, failing fast when offline and absent."""
    import open_clip

    if Path(name).is_dir():
        if not (Path(name) / "open_clip_config.json").is_file():
            raise ModelNotAvailable(f"local CLIP folder '{name}' has no open_clip_config.json")
        return f"local-dir:{name}", None
    if name not in open_clip.list_models():
        raise ModelNotAvailable(f"'{name}' is neither an open_clip model name nor a local folder with open_clip_config.json")
    if not pretrained:
        return name, None
    if Path(pretrained).is_file():
        return name, pretrained
    if _offline() and _cached_pretrained_file(name, pretrained) is None:
        raise ModelNotAvailable(
            f"CLIP weights '{name}' / pretrained '{pretrained}' are not in the local cache and HF_HUB_OFFLINE is set."
            f" Fetch them once online (python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{pretrained}')\")"
            f" or set models.clip.pretrained to a checkpoint file.")
    return name, pretrained


def load_clip(name: str, pretrained: str = "", device: str | torch.device = "cpu") -> LoadedClip:
    import open_clip

    model_name, weights = _source(name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=weights, device=device)
    except (RuntimeError, OSError) as error:
        raise ModelNotAvailable(f"could not load CLIP '{name}' (pretrained '{pretrained}'): {error}") from None
    tokenizer = open_clip.get_tokenizer(model_name)
    cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return LoadedClip(model, tokenizer, size, mean, std)
