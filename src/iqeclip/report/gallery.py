"""The example images of a report: which examples are shown, their map overlays (with the
ground-truth contour) and the PNG grid of them that ``report.md`` links to."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from iqeclip.report.folder import Example
from iqeclip.report.heatmaps import draw_contour, grid, overlay, value_ticks

__all__ = ["example_overlays", "examples_png", "map_range", "split_examples"]

_GRID_TILE = 128


def split_examples(examples: list[Example], top_k: int) -> tuple[list[Example], list[Example]]:
    """The highest-scoring (descending) and lowest-scoring (ascending) examples, disjoint."""
    ranked = sorted(examples, key=lambda e: (-e.score, e.name))
    n = len(ranked)
    k_hi = min(top_k, math.ceil(n / 2))
    k_lo = min(top_k, n - k_hi)
    highest = ranked[:k_hi]
    lowest = ranked[::-1][:k_lo]
    return highest, lowest


def map_range(examples: Sequence[Example]) -> tuple[float, float]:
    """The map values that the overlays' colours span: the lowest and highest over all examples."""
    if not examples:
        return 0.0, 1.0
    return min(float(e.amap.min()) for e in examples), max(float(e.amap.max()) for e in examples)


def example_overlays(examples: Sequence[Example]) -> list[np.ndarray]:
    """Map overlays (+ ground-truth contours), the maps min-max normalised over all examples
    (:func:`map_range`)."""
    if not examples:
        return []
    lo, hi = map_range(examples)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = []
    for e in examples:
        tile = overlay(e.image, (e.amap - lo) * scale)
        if e.mask is not None and e.mask.any():
            tile = draw_contour(tile, e.mask)
        out.append(tile)
    return out


def _fit(tile: np.ndarray, size: int = _GRID_TILE) -> np.ndarray:
    """Resize into a ``size`` square keeping the aspect ratio, padded with white."""
    img = Image.fromarray(tile)
    f = size / max(img.size)
    if f != 1:
        img = img.resize(
            (max(1, round(img.width * f)), max(1, round(img.height * f))),
            Image.Resampling.BILINEAR,
        )
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


def examples_png(
    groups: Sequence[tuple[str, Sequence[Example], Sequence[np.ndarray]]],
) -> Image.Image:
    """One picture of the examples: per (name, examples, overlays) group a row of inputs and a
    row of overlays, each tile fitted into a square, with row labels, rank titles and the colour
    bar of the map values."""
    rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    for name, exs, overlays in groups:
        if not exs:
            continue
        rows.append([_fit(e.image) for e in exs])
        rows.append([_fit(o) for o in overlays])
        row_labels += [f"{name}: input", f"{name}: map"]
    cols = max(len(r) for r in rows)
    lo, hi = map_range([e for _, exs, _ in groups for e in exs])
    return grid(
        rows,
        labels=row_labels,
        titles=[f"#{i + 1}" for i in range(cols)],
        bar=value_ticks(lo, hi),
        bar_title="map value",
    )
