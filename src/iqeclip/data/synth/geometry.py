"""Geometric and numeric helpers shared by the synthetic-benchmark image generators.

Coordinates are normalised: x and y run over [-1, 1] across the image, y pointing down, so every
shape scales with ``image_size``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

_WOBBLE_STEPS = 1024
_WOBBLE_ANGLES = np.linspace(-np.pi, np.pi, _WOBBLE_STEPS + 1)

Array = np.ndarray
Rendered = tuple[Array, Array | None]


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[Array, Array]:
    """Normalised pixel-centre coordinates of an n x n image: x as a row, y as a column.

    Both broadcast against each other to the full image, which keeps per-pixel geometry to a
    few whole-image operations.
    """
    c = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0
    c.flags.writeable = False
    return c[None, :], c[:, None]


def _radius(
    xx: Array, yy: Array, cx: float, cy: float, a: float, b: float, angle: float = 0.0
) -> Array:
    """Elliptic radius around (cx, cy): 1 on the ellipse with semi-axes a, b turned by angle."""
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = dx * (cos / a) + dy * (sin / a)
    v = dy * (cos / b) - dx * (sin / b)
    return np.sqrt(u * u + v * v)


def _polar(
    xx: Array, yy: Array, cx: float, cy: float, a: float, b: float, angle: float = 0.0
) -> tuple[Array, Array]:
    """Elliptic radius (1 on the ellipse boundary) and polar angle around (cx, cy)."""
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xx - cx, yy - cy
    u = dx * (cos / a) + dy * (sin / a)
    v = dy * (cos / b) - dx * (sin / b)
    return np.sqrt(u * u + v * v), np.arctan2(v, u)


def _wobble(rng: np.random.Generator, theta: Array, amp: float, orders: tuple[int, ...]) -> Array:
    """Random smooth radial modulation ``1 + sum a_k cos(k theta + phi_k)`` of an angle field.

    The function is tabulated over 1024 angles and looked up, which is much cheaper than
    evaluating cosines on every pixel.
    """
    table = np.ones(_WOBBLE_STEPS + 1)
    for k in orders:
        weight = rng.uniform(0.3, 1.0) * amp / len(orders)
        table += weight * np.cos(k * _WOBBLE_ANGLES + rng.uniform(0, 6.3))
    index = ((theta + np.pi) * (_WOBBLE_STEPS / (2 * np.pi))).astype(np.intp)
    return table[np.clip(index, 0, _WOBBLE_STEPS)]


def _blob(
    rng: np.random.Generator,
    xx: Array,
    yy: Array,
    cx: float,
    cy: float,
    radius: float,
    aspect: float = 1.0,
    irregular: float = 0.35,
) -> Array:
    """Irregular filled blob (boolean) of about ``radius`` around (cx, cy)."""
    angle = rng.uniform(0, np.pi)
    r, theta = _polar(xx, yy, cx, cy, radius * aspect, radius / aspect, angle)
    inside = r < _wobble(rng, theta, irregular, (2, 3, 5))
    if not inside.any():  # far too small for the grid: keep at least the centre pixel
        n = inside.shape[1]
        row = int(np.clip((cy + 1) / 2 * n, 0, n - 1))
        col = int(np.clip((cx + 1) / 2 * n, 0, n - 1))
        inside[row, col] = True
    return inside


def _texture(rng: np.random.Generator, n: int, sigma_px: float) -> Array:
    """Smooth random field with zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal((n, n)), max(sigma_px, 0.5), truncate=2.5)
    return (field - field.mean()) / (field.std() + 1e-12)


def _pick(rng: np.random.Generator, region: Array, xx: Array, yy: Array) -> tuple[float, float]:
    """A random point (normalised x, y) of a boolean image-sized region."""
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return 0.0, 0.0
    row, col = divmod(int(idx[rng.integers(idx.size)]), region.shape[1])
    return float(xx.flat[col]), float(yy.flat[row])


def _quant(img: Array) -> Array:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _with_anomaly(base: Array, changed: Array | None) -> Rendered:
    """Quantise the image; the mask is exactly where the anomaly changed a pixel value."""
    if changed is None:
        return _quant(base), None
    q_base, q_new = _quant(base), _quant(changed)
    mask = np.any(q_new != q_base, axis=-1) if q_new.ndim == 3 else q_new != q_base
    return q_new, mask


def _px(n: int, px_at_128: float) -> float:
    """A length given in pixels of a 128-pixel image, rescaled to an n-pixel one."""
    return px_at_128 * n / 128.0
