"""Captions of the real shots for DISEF, from a transformers image-captioning model (BLIP class).

`synth.captioner` is a hub id (Salesforce/blip-image-captioning-base) or a local folder holding a
BlipForConditionalGeneration and its BlipProcessor (save_pretrained layout). Captions are greedy,
unconditional and cached per shot in results/{dataset}/captions/k{K}_seed{seed}.csv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from datadream_core.data.fewshot import Shot, read_fewshot
from datadream_core.data.images import load_rgb
from datadream_core.io import LOG, read_csv, write_csv
from datadream_core.jobs import progress
from datadream_core.models import ModelNotAvailable
from datadream_core.models.hub import check_model_path, hub_offline, not_in_cache, require_cached_when_offline

CAPTIONS_HEADER = ("path", "class_index", "rank", "caption")
CAPTIONER_SETTING = "captioner (synth.captioner)"


@dataclass
class Captioner:
    model: torch.nn.Module
    processor: object
    device: torch.device


def load_captioner(path: str, device: str | torch.device = "cpu") -> Captioner:
    """Load a BLIP captioner from a local folder or the Hugging Face cache; fail fast with a clear message."""
    source = path
    if check_model_path(path, CAPTIONER_SETTING):
        source = str(Path(path).expanduser())
        if not (Path(source) / "config.json").is_file():
            raise ModelNotAvailable(f"local captioner folder '{path}' has no config.json (save_pretrained layout expected)")
    else:
        require_cached_when_offline(path, None, CAPTIONER_SETTING)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    try:
        processor = BlipProcessor.from_pretrained(source, local_files_only=hub_offline())
        model = BlipForConditionalGeneration.from_pretrained(source, local_files_only=hub_offline())
    except (OSError, ValueError) as error:
        raise not_in_cache(CAPTIONER_SETTING, path, error) from None
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


def caption_shots_job(fewshot_csv: str | Path, captions_csv: str | Path, shots: int, settings: Mapping,
                      captioner: str) -> None:
    """Caption the K-shot set of `fewshot_csv` with the captioner of `settings` (its identity: `captioner`)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = caption_shots(read_fewshot(fewshot_csv, shots), captions_csv, settings["captioner"],
                          batch_size=settings["caption_batch_size"], max_new_tokens=settings["caption_max_tokens"],
                          device=device)
    LOG.info("captioned %d shots with %s (%s)", count, settings["captioner"], captioner)
