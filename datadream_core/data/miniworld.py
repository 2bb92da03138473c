"""A procedurally rendered miniature world: small RGB images of invented object classes.

Each class is an invented word whose look (shape, colour, marking) the name does not convey.
The SOURCE domain is what the tiny base models are trained on; the TARGET domain, which the
few-shot data and the test set come from, shifts background and tint in ways only real shots show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datadream_core.io import atomic_path, write_csv


@dataclass(frozen=True)
class WorldClass:
    name: str
    shape: str
    colour: tuple[int, int, int]
    marking: str


WORLD_CLASSES: tuple[WorldClass, ...] = (
    WorldClass("blicket", "circle", (210, 40, 40), "none"),
    WorldClass("dax", "circle", (40, 70, 210), "dot"),
    WorldClass("wug", "square", (210, 40, 40), "dot"),
    WorldClass("toma", "square", (40, 70, 210), "none"),
    WorldClass("fep", "triangle", (210, 40, 40), "none"),
    WorldClass("zib", "triangle", (40, 70, 210), "dot"),
    WorldClass("kiki", "star", (210, 40, 40), "dot"),
    WorldClass("bouba", "star", (40, 70, 210), "none"),
)

DOMAINS = ("source", "target")


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(math.pi / 4 + k * math.pi / 2) for k in range(4)]
        points = [(radius, a) for a in corners]
    elif shape == "triangle":
        points = [(radius * 1.15, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif shape == "star":
        points = [((radius * 1.1 if k % 2 == 0 else radius * 0.45), -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    else:
        raise ValueError(f"unknown shape '{shape}'")
    return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for r, a in points]


def _background(size: int, domain: str, rng: np.random.Generator) -> np.ndarray:
    if domain == "source":
        level = rng.uniform(205, 235)
        return np.full((size, size, 3), level, dtype=np.float64)
    # Target: a smooth two-colour gradient in sandy/olive tones the source never shows.
    top = np.array([rng.uniform(150, 200), rng.uniform(160, 200), rng.uniform(90, 130)])
    bottom = top * rng.uniform(0.7, 0.9)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def render_image(cls: WorldClass, domain: str, size: int, rng: np.random.Generator) -> Image.Image:
    scale = 4  # draw large, then box-downsample for anti-aliased edges
    big = size * scale
    canvas = Image.fromarray(np.clip(_background(big, domain, rng), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    radius = big * rng.uniform(0.26, 0.36)
    jitter = big * 0.06
    cx, cy = big / 2 + rng.uniform(-jitter, jitter), big / 2 + rng.uniform(-jitter, jitter)
    angle = rng.uniform(-0.3, 0.3)
    colour = np.array(cls.colour, dtype=np.float64)
    if domain == "target":
        colour = colour * 0.75 + np.array([40.0, 25.0, 10.0])  # a warm tint on every object
    colour = tuple(int(v) for v in np.clip(colour + rng.normal(0, 8, 3), 0, 255))
    if cls.shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
    else:
        draw.polygon(_polygon(cls.shape, cx, cy, radius, angle), fill=colour)
    if cls.marking == "dot":
        dot = radius * 0.28
        draw.ellipse([cx - dot, cy - dot, cx + dot, cy + dot], fill=(245, 245, 245))
    return canvas.resize((size, size), Image.BOX)


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
    for split_index, (split, count) in enumerate(sorted(counts.items())):
        for class_index, cls in enumerate(WORLD_CLASSES[:num_classes]):
            folder = out_dir / split / cls.name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, DOMAINS.index(domain), split_index, class_index, i])
                target = folder / f"{i:05d}.png"
                with atomic_path(target) as tmp:
                    render_image(cls, domain, image_size, rng).save(tmp, format="PNG")
                rows.append((str(target), class_index, split))
    return rows


def write_world_manifest(path: str | Path, rows: list[tuple[str, int, str]]) -> None:
    write_csv(path, ("path", "class_index", "split"), rows)
