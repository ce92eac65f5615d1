"""Anomaly maps as pictures: colour maps, overlays, ground-truth contours, image grids (PIL only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# A perceptually ordered dark-blue -> red -> yellow ramp (anchor colours of "inferno"-like maps).
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)


def _ramp(values: np.ndarray) -> np.ndarray:
    """The colour ramp, linear between the anchors, at values in [0, 1] (float RGB)."""
    v = values * (len(_ANCHORS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (v - lo)[..., None]
    return _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac


_STEPS = 7 * 585  # table entries - 1: a multiple of the 7 segments, so every anchor is an entry
_TABLE = _ramp(np.linspace(0.0, 1.0, _STEPS + 1)).astype(np.float32)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] ``(H, W)`` to RGB uint8 ``(H, W, 3)`` (values outside are clipped).

    Looked up in a table of 4,096 colours (within 0.11 of the exact ramp: half a step times the
    steepest segment), 4x faster than evaluating the ramp per pixel: predict colours every map
    it writes."""
    return np.rint(_colours(values)).astype(np.uint8)


def _colours(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    return _TABLE[np.rint(v * _STEPS).astype(np.intp)]


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured map over an RGB uint8 image of the same size ``(H, W, 3)``."""
    if image.shape[:2] != values.shape:
        raise ValueError(f"image {image.shape[:2]} and map {values.shape} differ in size")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * _colours(values)
    return np.rint(blend).astype(np.uint8)


def draw_contour(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)
) -> np.ndarray:
    """Draw the boundary pixels of a bool mask ``(H, W)`` onto a copy of ``image``."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    out = image.copy()
    out[m & ~inner] = color
    return out


def colour_bar(height: int, ticks: Sequence[tuple[float, str]], width: int = 12) -> np.ndarray:
    """A vertical bar of the map colours (0 at the bottom, 1 at the top) with tick labels to its
    right: ``ticks`` are (position in [0, 1], text). RGB uint8 ``(height, width + 64, 3)``."""
    canvas = Image.new("RGB", (width + 64, height), "white")
    ramp = colorize(np.linspace(1.0, 0.0, height)[:, None].repeat(width, axis=1))
    canvas.paste(Image.fromarray(ramp), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for position, text in ticks:
        y = round((1 - position) * (height - 1))
        draw.line([(width, y), (width + 3, y)], fill="black")
        draw.text((width + 5, min(max(y - 5, 0), height - 11)), text, fill="black")
    return np.asarray(canvas)


def value_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """Ticks of a bar whose colours span map values ``lo`` (0) to ``hi`` (1)."""
    return [(p, f"{lo + p * (hi - lo):.3g}") for p in (0.0, 0.5, 1.0)]


def grid(
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    pad: int = 4,
    bar: Sequence[tuple[float, str]] | None = None,
    bar_title: str = "",
) -> Image.Image:
    """Tile equally sized RGB uint8 images into a grid, with optional row labels (left), column
    titles (top) and, with ``bar`` ticks, a colour bar of the map colours at the right."""
    h, w = rows[0][0].shape[:2]
    left = 110 if labels else 0
    top = 16 if titles or bar_title else 0
    cols = max(len(r) for r in rows)
    body = (h + pad) * len(rows) - pad
    strip = colour_bar(max(body, 24), bar) if bar is not None else None
    right = strip.shape[1] + 2 * pad if strip is not None else 0
    size = (left + cols * (w + pad) + pad + right, top + len(rows) * (h + pad) + pad)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(titles or []):
        draw.text((left + pad + j * (w + pad), 3), title, fill="black")
    for i, row in enumerate(rows):
        y = top + pad + i * (h + pad)
        if labels:
            draw.text((4, y + h // 2 - 6), labels[i], fill="black")
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (left + pad + j * (w + pad), y))
    if strip is not None:
        x = left + cols * (w + pad) + 2 * pad
        canvas.paste(Image.fromarray(strip), (x, top + pad))
        draw.text((x, 3), bar_title, fill="black")
    return canvas
