"""Sample grids (paper Fig. 1 and 3): per class, the real shots beside samples of every generator."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps

from datadream_core.data.fewshot import read_fewshot
from datadream_core.data.images import load_rgb
from datadream_core.data.table import ClassRow, read_classes
from datadream_core.io import LOG, read_csv
from datadream_core.report import generator_label
from datadream_core.report.figures import plt, save_png  # figures selects the headless Agg backend

TILE = 80  # pixels per image in the mosaic; small source images are enlarged to this
STEP = TILE + 3  # a thin white gap keeps neighbouring tiles apart when they look alike
BLOCK_GAP = TILE // 3
ROW_GAP = TILE // 8
# Class names come in any script: matplotlib takes a glyph missing from the first family from the next.
LABEL_FONTS = ("DejaVu Sans", "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans Arabic",
               "Noto Sans Devanagari", "Noto Sans Hebrew", "Noto Sans Thai", "WenQuanYi Zen Hei",
               "Droid Sans Fallback", "Arial Unicode MS")


def real_shots(fewshot_csv: str | Path, shots: int) -> dict[int, list[str]]:
    """Class index -> paths of its K-shot set, in rank order."""
    by_class: dict[int, list] = defaultdict(list)
    for shot in sorted(read_fewshot(fewshot_csv, shots), key=lambda s: s.rank):
        by_class[shot.class_index].append(shot.path)
    return dict(by_class)


def manifest_samples(manifest_csv: str | Path) -> dict[int, list[str]]:
    """Class index -> paths of its synthetic images, by image index (the same images whatever the sharding)."""
    by_class: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in read_csv(manifest_csv):
        by_class[int(row["class_index"])].append((int(row["image_index"]), row["path"]))
    return {index: [path for _, path in sorted(rows)] for index, rows in by_class.items()}


def pick_classes(classes: Sequence[ClassRow], count: int) -> list[ClassRow]:
    """`count` classes spread evenly over the class list, so large datasets show a cross-section."""
    if len(classes) <= count:
        return list(classes)
    positions = np.unique(np.linspace(0, len(classes) - 1, count).round().astype(int))
    return [classes[p] for p in positions]


@lru_cache(maxsize=1)
def _label_fonts() -> tuple[list[str], frozenset[int]]:
    """The families of LABEL_FONTS installed here, and every code point one of them can draw."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    files: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        files.setdefault(entry.name, entry.fname)
    families = [family for family in LABEL_FONTS if family in files]
    covered = frozenset().union(*(FT2Font(files[family]).get_charmap() for family in families))
    return families, covered


def class_label(info: ClassRow) -> str:
    """The class name as drawn in a grid (long names shortened); warns, naming the class, about
    characters that no installed font of LABEL_FONTS can draw (they show as empty boxes)."""
    _, covered = _label_fonts()
    missing = sorted({char for char in info.name if not char.isspace() and ord(char) not in covered})
    if missing:
        LOG.warning("class '%s' (index %d): no installed font draws %s; the grid shows empty boxes there"
                    " (install a font that has them, e.g. Noto Sans CJK for Chinese or Japanese)", info.name,
                    info.index, ", ".join(f"'{char}' (U+{ord(char):04X})" for char in missing))
    return info.name if len(info.name) <= 28 else info.name[:27] + "…"


def _tile(path: str) -> Image.Image:
    return ImageOps.fit(load_rgb(path), (TILE, TILE), Image.Resampling.BICUBIC)


def sample_grid(classes: Sequence[ClassRow], real: Mapping[int, Sequence[str]],
                generated: Mapping[str, Mapping[int, Sequence[str]]], output: str | Path, title: str,
                images_per_block: int = 6, max_classes: int = 8) -> None:
    """A mosaic with a row per class and a block per image source: "Real", then each generator."""
    shown = pick_classes(classes, max_classes)
    blocks = [("Real shots", real)] + [(generator_label(g), samples) for g, samples in generated.items()]
    widths = [max(1, min(images_per_block, max((len(s.get(c.index, [])) for c in shown), default=0)))
              for _, s in blocks]
    spans = [(w - 1) * STEP + TILE for w in widths]
    starts = np.cumsum([0] + [span + BLOCK_GAP for span in spans])[:-1]
    canvas = Image.new("RGB", (int(starts[-1]) + spans[-1], len(shown) * (TILE + ROW_GAP) - ROW_GAP), "white")
    for row, info in enumerate(shown):
        for (_, samples), start, width in zip(blocks, starts, widths):
            for column, path in enumerate(list(samples.get(info.index, []))[:width]):
                canvas.paste(_tile(path), (int(start) + column * STEP, row * (TILE + ROW_GAP)))
    scale = 1 / 72  # one canvas pixel per point keeps the labels readable at any grid size
    figure, ax = plt.subplots(figsize=(canvas.width * scale + 2.2, canvas.height * scale + 0.9))
    ax.imshow(np.asarray(canvas), interpolation="nearest")
    # Names are plain text: "$" in a class name must not switch to mathtext (which can fail on it).
    ax.set_yticks([row * (TILE + ROW_GAP) + TILE / 2 for row in range(len(shown))],
                  [class_label(info) for info in shown], fontsize=11, parse_math=False,
                  fontfamily=_label_fonts()[0])
    shots = max((len(real.get(c.index, [])) for c in shown), default=0)
    labels = [label for label, _ in blocks]
    if widths[0] < shots:
        labels[0] = f"Real shots ({widths[0]} of {shots})"
    ax.set_xticks([start + span / 2 for start, span in zip(starts, spans)], labels, fontsize=11)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=12, pad=24, parse_math=False)
    save_png(figure, output)


def sample_grid_figure(classes_csv: str | Path, fewshot_csv: str | Path, manifests: Sequence[str], png: str | Path,
                       dataset: str, generators: Sequence[str], shots: int, seed: int, images_per_block: int,
                       max_classes: int) -> None:
    """One dataset's sample grid (Fig. 1, 3): its real shots beside each generator's images (`manifests`, in the
    order of `generators`)."""
    generated = {generator: manifest_samples(manifest) for generator, manifest in zip(generators, manifests)}
    sample_grid(read_classes(classes_csv), real_shots(fewshot_csv, shots), generated, png,
                f"{dataset}: {shots} real shots and synthetic samples (seed {seed})", images_per_block, max_classes)
