"""One image loader for every stage: any mode in, 8-bit RGB out, EXIF orientation applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageProblem(Exception):
    """A file that cannot be used as an image; `reason` is what problems.csv records."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) greyscale: scale the full range down to 8 bits, not clip it.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min(initial=0)), float(array.max(initial=1))
        array = (array - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(array.astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        # Transparent pixels have arbitrary colours underneath: composite on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Open `path` as an RGB image; raise ImageProblem for non-images and unreadable files.

    `draft_size` lets JPEG decoders skip detail when only a check or a thumbnail is needed.
    """
    try:
        with Image.open(path) as image:
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UnidentifiedImageError:
        raise ImageProblem(path, "not an image file") from None
    except FileNotFoundError:
        raise ImageProblem(path, "file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageProblem(path, f"unreadable or truncated image ({exc})") from None


def check_image(path: str | Path) -> str | None:
    """Return None when `path` decodes, else the reason it does not."""
    try:
        load_rgb(path, draft_size=64)
    except ImageProblem as problem:
        return problem.reason
    return None


def is_candidate_file(path: Path) -> bool:
    """Files an ImageFolder considers at all; hidden files and folders are skipped silently."""
    return path.is_file() and not path.name.startswith(".")
