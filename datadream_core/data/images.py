"""One image loader for every stage: any mode in, 8-bit RGB out, EXIF orientation applied."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_MEGAPIXELS = 64.0
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class ImageProblem(Exception):
    """A file that cannot be used as an image; `reason` is what problems.csv records."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale the format's full range down to 8 bits, whatever this image's
        # brightest pixel (a dark 16-bit image stays dark). 32-bit values beyond it scale by their peak.
        array = np.asarray(image, dtype=np.float64)
        peak = max(65535.0, float(array.max(initial=0)))
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


def check_image(path: str | Path, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> str | None:
    """Return None when `path` decodes and is at most `max_megapixels`, else the reason it is not usable.

    A huge image would be decoded in full at every later load, by every stage, to become a 512-px
    sample: it is refused here, once, with its size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below says more
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"image too large to open safely ({exc}); downscale it"
    except (OSError, SyntaxError, ValueError):
        width = height = 0  # load_rgb names what is wrong with the file
    if width * height > max_megapixels * 1e6:
        return (f"image is {width * height / 1e6:.1f} megapixels ({width}x{height}), above the limit of"
                f" {max_megapixels:g} (data.max_megapixels): downscale it or raise the limit")
    try:
        load_rgb(path, draft_size=64)
    except ImageProblem as problem:
        return problem.reason
    return None


def inspect_file(path: str | Path, verify: bool = True,
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> tuple[str | None, str | None]:
    """(reason the file is not usable or None, SHA-256 of its bytes or None when unreadable)."""
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable file ({exc.strerror or exc})", None
    return (check_image(path, max_megapixels) if verify else None), digest


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS
