"""A procedurally rendered miniature world: small RGB images of invented object classes.

The world is made of flat objects: a shape (circle, square, ...) in a colour, carrying a white
marking (none, a dot, a bar, a ring) on a background. The eight classes are invented words that
come in four pairs; the two classes of a pair share shape and colour and differ only by their
marking, a fine-grained detail the class name does not convey.

SOURCE, what the tiny base models learn from, has two parts:
* compositional images: any shape x colour x marking on a named background (grey, white, dark,
  sky, mint, lilac) or on an unnamed random gradient, captioned by their parts ("a red circle with
  a dot on a sky background"), so the base generator can render any of them;
* class-name images ("a photo of a blicket", 30 %): the class's shape and colour on a plain
  light-grey studio background, with a RANDOM marking. The base models know a blicket only as
  "a red circle" -- and a dax, too.
TARGET, where the few-shot data and the test set come from, shows every class with its own marking,
a warm tint on the object, on a smooth sand-to-olive gradient that no class-name caption comes with.
An unadapted generator prompted "a photo of a blicket" therefore draws red circles with any marking
on grey, the same images as for "dax": useless to tell the pair apart. Only the real shots show which
marking belongs to which name, and where.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw

from datadream_core.io import LOG, atomic_path, write_csv
from datadream_core.seeding import seeded_rng

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35), "orange": (235, 125, 25), "yellow": (225, 200, 40),
    "green": (45, 150, 60), "blue": (40, 70, 210), "purple": (130, 45, 175),
}
MARKINGS = ("none", "dot", "bar", "ring")
MARKING_COLOUR = (245, 245, 245)
# Backgrounds of the compositional source: plain or gently graded, top and bottom colours.
SOURCE_BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "grey": ((220, 220, 220), (220, 220, 220)),
    "white": ((246, 246, 246), (246, 246, 246)),
    "dark": ((60, 60, 66), (60, 60, 66)),
    "sky": ((170, 205, 240), (200, 225, 250)),
    "mint": ((185, 230, 200), (160, 215, 180)),
    "lilac": ((215, 195, 235), (195, 175, 225)),
}
# The target's background: a smooth vertical sand -> olive gradient, in no source caption.
TARGET_BACKGROUND = ((205, 185, 130), (140, 140, 75))
TARGET_TINT = (0.75, (45.0, 30.0, 5.0))  # object colour * 0.75 + warm offset


@dataclass(frozen=True)
class WorldClass:
    name: str
    shape: str
    colour: tuple[int, int, int]
    marking: str
    colour_name: str = ""

    @property
    def coarse(self) -> str:
        """What the source world calls it: "a red circle"."""
        return f"{self.colour_name} {self.shape}"


def _cls(name: str, shape: str, colour: str, marking: str) -> WorldClass:
    return WorldClass(name, shape, COLOURS[colour], marking, colour)


WORLD_CLASSES: tuple[WorldClass, ...] = (
    _cls("blicket", "circle", "red", "dot"),
    _cls("dax", "circle", "red", "bar"),
    _cls("wug", "square", "blue", "ring"),
    _cls("toma", "square", "blue", "none"),
    _cls("fep", "triangle", "purple", "dot"),
    _cls("zib", "triangle", "purple", "none"),
    _cls("kiki", "star", "orange", "bar"),
    _cls("bouba", "star", "orange", "ring"),
)

DOMAINS = ("source", "target")
SUPERSAMPLE = 4  # draw large, then box-downsample for anti-aliased edges


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        points = [(radius, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif shape == "triangle":
        points = [(radius * 1.2, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif shape == "star":
        points = [((radius * 1.15 if k % 2 == 0 else radius * 0.5), -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    elif shape == "hexagon":
        points = [(radius * 1.05, k * math.pi / 3) for k in range(6)]
    elif shape == "cross":
        arm, half = radius, radius * 0.38
        corners = [(half, arm), (-half, arm), (-half, half), (-arm, half), (-arm, -half), (-half, -half),
                   (-half, -arm), (half, -arm), (half, -half), (arm, -half), (arm, half), (half, half)]
        points = [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    else:
        raise ValueError(f"unknown shape '{shape}'")
    return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for r, a in points]


def _gradient(size: int, top, bottom, rng: np.random.Generator, jitter: float) -> np.ndarray:
    top = np.asarray(top, dtype=np.float64) + rng.normal(0, jitter, 3)
    bottom = np.asarray(bottom, dtype=np.float64) + rng.normal(0, jitter, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def _shape_mask(shape: str, big: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=255)
    return np.asarray(mask) > 0


def _marking_mask(marking: str, big: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    if marking == "none":
        return np.zeros((big, big), dtype=bool)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if marking == "dot":
        dot = radius * 0.33
        draw.ellipse([cx - dot, cy - dot, cx + dot, cy + dot], fill=255)
    elif marking == "ring":
        outer, inner = radius * 0.62, radius * 0.34
        draw.ellipse([cx - outer, cy - outer, cx + outer, cy + outer], fill=255)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif marking == "bar":
        half_width, half_length = radius * 0.17, radius * 2
        corners = [(-half_length, -half_width), (half_length, -half_width), (half_length, half_width), (-half_length, half_width)]
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=255)
    else:
        raise ValueError(f"unknown marking '{marking}'")
    return np.asarray(mask) > 0


def draw_object(background: np.ndarray, shape: str, colour, marking: str, rng: np.random.Generator,
                scale: tuple[float, float] = (0.27, 0.35), jitter: float = 0.06, max_angle: float = 0.3,
                colour_noise: float = 8) -> np.ndarray:
    """Draw one object onto a (big, big, 3) float background in place and return it."""
    big = background.shape[0]
    radius = big * rng.uniform(*scale)
    cx, cy = big / 2 + rng.uniform(-jitter, jitter) * big, big / 2 + rng.uniform(-jitter, jitter) * big
    angle = rng.uniform(-max_angle, max_angle)
    colour = np.clip(np.asarray(colour, dtype=np.float64) + rng.normal(0, colour_noise, 3), 0, 255)
    body = _shape_mask(shape, big, cx, cy, radius, angle)
    background[body] = colour
    background[body & _marking_mask(marking, big, cx, cy, radius, angle)] = MARKING_COLOUR
    return background


def _finish(canvas: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).resize((size, size), Image.BOX)


def render_image(cls: WorldClass, domain: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of a class: SOURCE shows its coarse look (random marking, grey studio), TARGET its real look."""
    big = size * SUPERSAMPLE
    if domain == "source":
        level = rng.uniform(205, 235)
        canvas = np.full((big, big, 3), level, dtype=np.float64)
        marking = MARKINGS[int(rng.integers(len(MARKINGS)))]
        draw_object(canvas, cls.shape, cls.colour, marking, rng)
    elif domain == "target":
        canvas = _gradient(big, *TARGET_BACKGROUND, rng, jitter=10)
        factor, offset = TARGET_TINT
        colour = np.asarray(cls.colour, dtype=np.float64) * factor + np.asarray(offset)
        draw_object(canvas, cls.shape, colour, cls.marking, rng, jitter=0.08)
    else:
        raise ValueError(f"unknown miniworld domain '{domain}' (known: {', '.join(DOMAINS)})")
    return _finish(canvas, size)


ATTRIBUTES = ("shape", "colour", "marking", "background", "class")
BACKGROUND_NAMES = tuple(SOURCE_BACKGROUNDS)
CLASS_TEMPLATES = ("a photo of a {}", "a {}", "a photo of the {}")


@dataclass(frozen=True)
class SourceSample:
    """One source training image, its caption and what each describes.

    `attributes` and `mentioned` index, per ATTRIBUTES, into SHAPES, COLOURS, MARKINGS,
    BACKGROUND_NAMES and WORLD_CLASSES; -1 in `attributes` means none (a compositional image has no
    class; an unnamed random background), -1 in `mentioned` means the caption says nothing about it. A caption is true of an image
    when every attribute it mentions matches.
    """

    image: Image.Image
    caption: str
    attributes: tuple[int, int, int, int, int]
    mentioned: tuple[int, int, int, int, int]


def compositional_caption(shape: str, colour: str, marking: str, background: str | None,
                          rng: np.random.Generator) -> tuple[str, tuple[int, int, int, int, int]]:
    """A caption naming the parts, with parts left out at random as real captions do, and what it mentions."""
    words = f"a {colour} {shape}"
    mentioned = [SHAPES.index(shape), list(COLOURS).index(colour), -1, -1, -1]
    if marking != "none" and rng.random() < 0.85:
        words += f" with a {marking}"
        mentioned[2] = MARKINGS.index(marking)
    elif marking == "none" and rng.random() < 0.3:
        words += " without marking"
        mentioned[2] = MARKINGS.index("none")
    if background is not None and rng.random() < 0.7:
        words += f" on a {background} background"
        mentioned[3] = BACKGROUND_NAMES.index(background)
    return ("a photo of " + words) if rng.random() < 0.5 else words, tuple(mentioned)


def render_source_sample(index: int, size: int, seed: int, class_fraction: float = 0.3,
                         num_classes: int = len(WORLD_CLASSES), random_background_fraction: float = 0.4) -> SourceSample:
    """Source training sample `index`, a function of (seed, index) alone.

    A `class_fraction` of the samples are class-name images (coarse look, random marking, grey studio
    background); the rest are compositional: any shape, colour and marking on a named source background
    or, for a `random_background_fraction` of them, on an unnamed random gradient.
    """
    rng = seeded_rng(seed, 7, index)
    big = size * SUPERSAMPLE
    if rng.random() < class_fraction:
        class_index = int(rng.integers(num_classes))
        cls = WORLD_CLASSES[class_index]
        caption = CLASS_TEMPLATES[int(rng.integers(len(CLASS_TEMPLATES)))].format(cls.name)
        canvas = np.full((big, big, 3), rng.uniform(205, 235), dtype=np.float64)
        marking = MARKINGS[int(rng.integers(len(MARKINGS)))]
        draw_object(canvas, cls.shape, cls.colour, marking, rng)
        attributes = (SHAPES.index(cls.shape), list(COLOURS).index(cls.colour_name), MARKINGS.index(marking),
                      BACKGROUND_NAMES.index("grey"), class_index)
        return SourceSample(_finish(canvas, size), caption, attributes, (-1, -1, -1, -1, class_index))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    marking = MARKINGS[int(rng.integers(len(MARKINGS)))]
    if rng.random() < random_background_fraction:
        # an unnamed random gradient: the base models see objects on all sorts of backgrounds
        background = None
        canvas = _gradient(big, rng.uniform(30, 235, 3), rng.uniform(30, 235, 3), rng, jitter=0)
    else:
        background = BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]
        canvas = _gradient(big, *SOURCE_BACKGROUNDS[background], rng, jitter=6)
    draw_object(canvas, shape, COLOURS[colour], marking, rng, colour_noise=16)
    caption, mentioned = compositional_caption(shape, colour, marking, background, rng)
    attributes = (SHAPES.index(shape), list(COLOURS).index(colour), MARKINGS.index(marking),
                  -1 if background is None else BACKGROUND_NAMES.index(background), -1)
    return SourceSample(_finish(canvas, size), caption, attributes, mentioned)


@dataclass
class SourceData:
    """Rendered source samples as arrays: what the base models are trained on."""

    images: np.ndarray  # (N, size, size, 3) uint8
    captions: list[str]
    attributes: np.ndarray  # (N, 5) int64, see SourceSample
    mentioned: np.ndarray  # (N, 5) int64

    def truth(self, image_index: np.ndarray, caption_index: np.ndarray) -> np.ndarray:
        """(len(image_index), len(caption_index)) bool: is caption j true of image i."""
        mentioned = self.mentioned[caption_index][None]
        return np.all((mentioned == -1) | (mentioned == self.attributes[image_index][:, None]), axis=-1)


def render_source(count: int, size: int, seed: int, class_fraction: float = 0.3, start: int = 0,
                  num_classes: int = len(WORLD_CLASSES)) -> SourceData:
    """Samples start..start+count-1 of the source as arrays."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    captions = []
    attributes = np.empty((count, len(ATTRIBUTES)), dtype=np.int64)
    mentioned = np.empty((count, len(ATTRIBUTES)), dtype=np.int64)
    for k in range(count):
        sample = render_source_sample(start + k, size, seed, class_fraction, num_classes)
        images[k] = np.asarray(sample.image)
        captions.append(sample.caption)
        attributes[k] = sample.attributes
        mentioned[k] = sample.mentioned
    return SourceData(images, captions, attributes, mentioned)


def render_generic(count: int, size: int, seed: int) -> np.ndarray:
    """(count, size, size, 3) uint8 images of random colours, shapes, markings and gradients: what the VAE
    learns as a general image codec (SD's VAE, too, reconstructs far more than SD draws well)."""
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    big = size * SUPERSAMPLE
    for k in range(count):
        rng = seeded_rng(seed, 11, k)
        canvas = _gradient(big, rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng, jitter=0)
        for _ in range(int(rng.integers(1, 3))):
            draw_object(canvas, SHAPES[int(rng.integers(len(SHAPES)))], rng.uniform(0, 255, 3),
                        MARKINGS[int(rng.integers(len(MARKINGS)))], rng, scale=(0.12, 0.38), jitter=0.25, max_angle=math.pi)
        images[k] = np.asarray(_finish(canvas, size))
    return images


def render_world(out_dir: str | Path, domain: str, image_size: int, counts: dict[str, int], seed: int,
                 num_classes: int = len(WORLD_CLASSES)) -> list[tuple[str, int, str]]:
    """Render `counts[split]` images per class of the first `num_classes` classes into
    `out_dir/{split}/{class}/{i:05d}.png`.

    Image i of a class in a split depends only on (seed, domain, split, class index, i).
    Returns (path, class index, split) rows.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown miniworld domain '{domain}' (known: {', '.join(DOMAINS)})")
    out_dir = Path(out_dir)
    rows = []
    for split, count in sorted(counts.items()):
        split_code = zlib.crc32(split.encode("utf-8"))
        for class_index, cls in enumerate(WORLD_CLASSES[:num_classes]):
            folder = out_dir / split / cls.name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = seeded_rng(seed, DOMAINS.index(domain), split_code, class_index, i)
                target = folder / f"{i:05d}.png"
                with atomic_path(target) as tmp:
                    render_image(cls, domain, image_size, rng).save(tmp, format="PNG")
                rows.append((str(target), class_index, split))
    return rows


def write_world_manifest(path: str | Path, rows: list[tuple[str, int, str]]) -> None:
    write_csv(path, ("path", "class_index", "split"), rows)


def render_world_dataset(world: Mapping[str, Any], manifest: str | Path, images: str | Path) -> None:
    """Render the dataset's `world` config section: its images into `images`, their list into `manifest`."""
    counts = {split: world[f"{split}_per_class"] for split in ("train", "val", "test")}
    rows = render_world(images, world["domain"], world["image_size"], counts, world["seed"], world["num_classes"])
    write_world_manifest(manifest, rows)
    LOG.info("rendered %d images", len(rows))
