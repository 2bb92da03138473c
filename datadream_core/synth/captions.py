"""Captions of the real shots for DISEF, from a transformers image-captioning model (BLIP class).

`synth.captioner` is a hub id (Salesforce/blip-image-captioning-base) or a local folder holding a
BlipForConditionalGeneration and its BlipProcessor (save_pretrained layout). Captions are greedy,
unconditional and cached per shot in results/{dataset}/captions/k{K}_seed{seed}.csv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from datadream_core.data.fewshot import Shot
from datadream_core.data.images import load_rgb
from datadream_core.io import read_csv, write_csv
from datadream_core.jobs import progress
from datadream_core.models import ModelNotAvailable

CAPTIONS_HEADER = ("path", "class_index", "rank", "caption")


@dataclass
class Captioner:
    model: torch.nn.Module
    processor: object
    device: torch.device


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_captioner(path: str, device: str | torch.device = "cpu") -> Captioner:
    """Load a BLIP captioner from a local folder or the Hugging Face cache; fail fast with a clear message."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    local = Path(path)
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelNotAvailable(f"local captioner folder '{path}' has no config.json (save_pretrained layout expected)")
    if not local.exists() and (path.startswith(("/", "./", "../")) or path.count("/") != 1):
        raise ModelNotAvailable(f"captioner '{path}' is not a local folder and not a hub id of the form org/name"
                                f" (synth.captioner)")
    try:
        processor = BlipProcessor.from_pretrained(path)
        model = BlipForConditionalGeneration.from_pretrained(path)
    except (OSError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise ModelNotAvailable(
            f"captioner '{path}' is neither a local folder nor in the Hugging Face cache"
            f"{' (HF_HUB_OFFLINE is set)' if _offline() else ''}: {type(error).__name__}: {first_line}."
            f" Download it on a machine with network access (`huggingface-cli download {path}`) or set"
            f" synth.captioner to a local folder (synth.captioner_build_tiny builds a tiny one for tests)."
        ) from None
    device = torch.device(device)
    model.to(device).eval()
    return Captioner(model, processor, device)


def caption_images(captioner: Captioner, paths: Sequence[str], batch_size: int = 16,
                   max_new_tokens: int = 30) -> list[str]:
    """Greedy captions, one per image, in order."""
    captions = []
    bar = progress(len(paths), "captions", unit="img")
    for begin in range(0, len(paths), batch_size):
        images = [load_rgb(path) for path in paths[begin:begin + batch_size]]
        inputs = captioner.processor(images=images, return_tensors="pt").to(captioner.device)
        with torch.inference_mode():
            tokens = captioner.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        captions += [" ".join(text.split()) for text in captioner.processor.batch_decode(tokens, skip_special_tokens=True)]
        bar.update(len(images))
    bar.close()
    return captions


def write_captions(target: str | Path, shots: Sequence[Shot], captions: Sequence[str]) -> None:
    write_csv(target, CAPTIONS_HEADER, ((shot.path, shot.class_index, shot.rank, caption)
                                        for shot, caption in zip(shots, captions)))


def read_captions(path: str | Path) -> dict[str, str]:
    """Shot path -> caption."""
    return {row["path"]: row["caption"] for row in read_csv(path)}


def caption_shots(shots: Sequence[Shot], target: str | Path, captioner_path: str, batch_size: int = 16,
                  max_new_tokens: int = 30, device: str | torch.device = "cpu") -> int:
    """Caption every shot once and write the cache CSV; returns the number of captions."""
    captioner = load_captioner(captioner_path, device)
    shots = sorted(shots, key=lambda shot: (shot.class_index, shot.rank))
    captions = caption_images(captioner, [shot.path for shot in shots], batch_size, max_new_tokens)
    write_captions(target, shots, captions)
    return len(captions)
