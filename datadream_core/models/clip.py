"""CLIP through open_clip: a model name plus a pretrained tag or file, or a local open_clip folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from datadream_core.models import ModelNotAvailable
from datadream_core.models.hub import hub_offline, is_local_model, not_in_cache


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenize: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _tag_config(name: str, tag: str) -> dict:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise ModelNotAvailable(
            f"open_clip has no pretrained tag '{tag}' for '{name}' (known: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'})")
    return cfg


def _is_tag(pretrained: str) -> bool:
    return bool(pretrained) and not is_local_model(pretrained)


def _cached_pretrained_file(name: str, tag: str) -> str | None:
    """The local file of an open_clip pretrained tag if it is already cached, else None."""
    from huggingface_hub import try_to_load_from_cache

    cfg = _tag_config(name, tag)
    if cfg.get("hf_hub"):
        repo_id = "/".join(cfg["hf_hub"].rstrip("/").split("/")[:2])
        for candidate in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.safetensors"):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str):
                return found
    elif cfg.get("url"):
        # open_clip's own cache for weights it downloads from a URL
        found = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if found.is_file():
            return str(found)
    return None


def _local_folder(name: str) -> Path | None:
    """The open_clip folder `name` names, or None for an open_clip model name."""
    if not is_local_model(name):
        import open_clip

        if name not in open_clip.list_models():
            raise ModelNotAvailable(f"'{name}' is neither an open_clip model name nor a local folder with open_clip_config.json")
        return None
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelNotAvailable(f"local CLIP folder '{name}' (models.clip.name) does not exist (relative paths start from {Path.cwd()})")
    if not (folder / "open_clip_config.json").is_file():
        raise ModelNotAvailable(f"local CLIP folder '{name}' has no open_clip_config.json (models.clip.name)")
    return folder


def trained_with_quick_gelu(name: str, pretrained: str) -> bool:
    """Whether the pretrained tag's weights were trained with QuickGELU (OpenAI's are); open_clip only warns."""
    return _is_tag(pretrained) and bool(_tag_config(name, pretrained).get("quick_gelu", False))


def _create(name: str, pretrained: str, with_weights: bool) -> torch.nn.Module:
    """The open_clip model for (name, pretrained) with the activation its weights need, with or without them."""
    import open_clip

    folder = _local_folder(name)
    if folder is not None:
        return open_clip.create_model(f"local-dir:{folder}", load_weights=with_weights)
    weights = clip_weights_file(name, pretrained) if with_weights else None
    preprocess = _tag_config(name, pretrained) if _is_tag(pretrained) else {}
    try:
        return open_clip.create_model(
            name, pretrained=weights, force_quick_gelu=trained_with_quick_gelu(name, pretrained),
            force_preprocess_cfg={key: preprocess[key] for key in ("mean", "std", "interpolation", "resize_mode")
                                  if key in preprocess})
    except (RuntimeError, OSError) as error:
        raise ModelNotAvailable(f"could not load CLIP '{name}' (pretrained '{pretrained}') from {weights}: {error}") from None


def build_clip(name: str, pretrained: str = "") -> torch.nn.Module:
    """The architecture `load_clip` builds for (name, pretrained), with random weights and nothing fetched."""
    return _create(name, pretrained, with_weights=False)


def clip_weights_file(name: str, pretrained: str = "") -> str | None:
    """The checkpoint file of a pretrained tag or file (None: random weights); fetched only when jobs may go online."""
    import open_clip

    if not pretrained:
        return None
    if not _is_tag(pretrained):
        if not Path(pretrained).expanduser().is_file():
            raise ModelNotAvailable(f"CLIP checkpoint file '{pretrained}' (models.clip.pretrained) does not exist")
        return str(Path(pretrained).expanduser())
    cached = _cached_pretrained_file(name, pretrained)
    if cached is not None:
        return cached
    if hub_offline():
        raise not_in_cache(f"CLIP weights (models.clip) '{name}' / pretrained", pretrained)
    return open_clip.download_pretrained(_tag_config(name, pretrained))


def load_clip(name: str, pretrained: str = "", device: str | torch.device = "cpu") -> LoadedClip:
    """CLIP from an open_clip name + pretrained tag or file, or from a local open_clip folder (its own weights)."""
    import open_clip

    model = _create(name, pretrained, with_weights=True).to(device)
    folder = _local_folder(name)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}" if folder is not None else name)
    cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return LoadedClip(model, tokenizer, size, mean, std)
