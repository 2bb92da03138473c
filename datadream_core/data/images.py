"""One image loader for every stage: any mode in, 8-bit RGB out, EXIF orientation applied."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_MEGAPIXELS = 64.0
DEFAULT_MIN_SIDE = 8
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


@dataclass(frozen=True)
class ImageLimits:
    """The sizes an image must have to be indexed (data.max_megapixels, data.min_image_side)."""

    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    min_side: int = DEFAULT_MIN_SIDE


@dataclass(frozen=True)
class FileCheck:
    reason: str | None  # why the file is not usable, None when it is
    digest: str | None  # SHA-256 of its bytes, None when unreadable
    frames: int = 1  # an animated image's frame count; only the first frame is ever read


def check_image(path: str | Path, limits: ImageLimits = ImageLimits()) -> str | None:
    """Return None when `path` decodes and is within `limits`, else the reason it is not usable.

    A huge image would be decoded in full at every later load, by every stage, to become a 512-px
    sample, and a tiny one (a 1x1 tracking pixel, an icon) holds nothing to learn from: both are refused
    here, once, with their size.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below says more
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        return f"image too large to open safely ({exc}); downscale it"
    except (OSError, SyntaxError, ValueError):
        width = height = None  # load_rgb names what is wrong with the file
    if width is not None and width * height > limits.max_megapixels * 1e6:
        return (f"image is {width * height / 1e6:.1f} megapixels ({width}x{height}), above the limit of"
                f" {limits.max_megapixels:g} (data.max_megapixels): downscale it or raise the limit")
    if width is not None and min(width, height) < limits.min_side:
        return (f"image is {width}x{height}, below the minimum side of {limits.min_side} px"
                " (data.min_image_side): replace it with a larger image or lower the limit")
    try:
        load_rgb(path, draft_size=64)
    except ImageProblem as problem:
        return problem.reason
    return None


def frame_count(path: str | Path) -> int:
    """An animated image's number of frames (1 for a still one); every loader reads the first frame only."""
    try:
        with Image.open(path) as image:
            return image.n_frames if getattr(image, "is_animated", False) else 1
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def inspect_file(path: str | Path, verify: bool = True, limits: ImageLimits = ImageLimits()) -> FileCheck:
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return FileCheck(f"unreadable file ({exc.strerror or exc})", None)
    if not verify:
        return FileCheck(None, digest)
    reason = check_image(path, limits)
    return FileCheck(reason, digest, frame_count(path) if reason is None else 1)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS
