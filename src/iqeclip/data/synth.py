"""Write a small synthetic medical anomaly-detection benchmark in the MVFA/BMAD folder layout.

The benchmark lets the tests and the offline demo run without downloading any real data. It holds
six datasets that imitate the six MVFA/BMAD ones, each with a plausible toy anatomy, speckle or
Gaussian noise and per-image jitter of position, size and intensity::

    <out>/<Name>_AD/{valid,test}/{good,Ungood}/img/<00000.png ...>
    <out>/<Name>_AD/{valid,test}/Ungood/anomaly_mask/<same name>   # Brain, Liver, Retina_RESC
    <out>/fewshot_seed/<Name>/<K>-shot.txt                           # K in 2, 4, 8, 16

==============  =====================  ===================================================  ====
Dataset         Image                  Anomaly                                              Mask
==============  =====================  ===================================================  ====
Brain           grey MRI slice         bright irregular tumour-like mass in the brain       yes
Liver           grey abdominal CT      dark (hypodense) lesion inside the liver             yes
Retina_RESC     grey OCT B-scan        dark fluid pocket between the retinal layers         yes
Retina_OCT2017  grey OCT B-scan, JPEG  drusen under the RPE, or a fluid pocket              no
Chest           grey chest X-ray       bright opacity in one lung field                     no
Histopathology  RGB H&E-like tile      cluster of enlarged, dark, irregular nuclei          no
==============  =====================  ===================================================  ====

Masks are 0/255 PNGs (mode ``L``) marking exactly the pixels that the anomaly changed. Images in
a class folder are numbered from ``00000`` on; ``Retina_OCT2017`` images are JPEG (quality 95),
all others PNG. A ``K-shot.txt`` file holds two lines, abnormal first, naming K distinct images of
the ``valid`` split::

    a-0: 00003.png 00011.png
    n-0: 00001.png 00007.png

Everything is deterministic: the same seed gives byte-identical files, and each image is drawn
from its own random stream derived from (seed, dataset, split, class, index), so a larger
``size`` only adds images and never changes the first ones.

Example:
    >>> from iqeclip.data.synth import write_benchmark
    >>> counts = write_benchmark("data/synth", size=12, seed=0)  # doctest: +SKIP
    >>> counts["Brain"]  # doctest: +SKIP
    {'valid': 32, 'test': 24}
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from iqeclip.errors import UserError

__all__ = ["DATASETS", "MASK_DATASETS", "SHOTS", "write_benchmark"]

DATASETS: tuple[str, ...] = (
    "Brain",
    "Liver",
    "Retina_RESC",
    "Retina_OCT2017",
    "Chest",
    "Histopathology",
)
"""Names of the synthetic datasets, written as ``<Name>_AD`` folders."""

MASK_DATASETS: tuple[str, ...] = ("Brain", "Liver", "Retina_RESC")
"""Datasets that get pixel masks under ``Ungood/anomaly_mask``."""

SHOTS: tuple[int, ...] = (2, 4, 8, 16)
"""The K of the ``fewshot_seed/<Name>/<K>-shot.txt`` support lists."""

_MIN_IMAGE_SIZE = 32
_SPLITS = ("valid", "test")
_CLASSES = ("good", "Ungood")
_FEWSHOT_POOL = max(SHOTS)  # support lists draw from the first 16 valid images of each class
_WOBBLE_STEPS = 1024
_WOBBLE_ANGLES = np.linspace(-np.pi, np.pi, _WOBBLE_STEPS + 1)

Array = np.ndarray
Rendered = tuple[Array, Array | None]


# --------------------------------------------------------------------------------------------
# Small geometric and numeric helpers. Coordinates are normalised: x and y run over [-1, 1]
# across the image, y pointing down, so every shape scales with ``image_size``.
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Modalities. Each renders a normal image from ``rng`` and, when ``abnormal``, overlays the
# anomaly on that very image, so that the mask is exactly the set of changed pixels.
# --------------------------------------------------------------------------------------------


def _brain(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    """Axial T1-like MRI slice: scalp, skull, grey and white matter, lateral ventricles."""
    xx, yy = _grid(n)
    cx, cy = rng.normal(0.0, 0.03, 2)
    a, b = rng.uniform(0.66, 0.76), rng.uniform(0.80, 0.90)
    r, theta = _polar(xx, yy, cx, cy, a, b, rng.normal(0.0, 0.06))
    img = np.full((n, n), 4.0)
    img[r < 1.0] = 185.0  # scalp
    img[r < 0.93] = 35.0  # skull
    img[r < 0.88] = 60.0  # CSF rim
    img[r < 0.86 * _wobble(rng, theta, 0.04, (11, 17))] = 105.0  # cortical grey matter
    img[r < 0.68 * _wobble(rng, theta, 0.14, (7, 9, 13))] = 165.0  # white matter
    off, length = rng.uniform(0.1, 0.14), rng.uniform(0.15, 0.22)
    for side in (-1.0, 1.0):
        vr = _radius(xx, yy, cx + side * off, cy - 0.08, 0.055, length, side * 0.3)
        img[vr < 1.0] = 45.0  # lateral ventricles, frontal horns diverging
    img += 8.0 * _texture(rng, n, _px(n, 3)) * (r < 0.88)
    img = ndimage.gaussian_filter(img * rng.uniform(0.9, 1.1), _px(n, 0.7))
    base = np.abs(img + rng.normal(0.0, 5.0, (n, n)))  # Rician-like magnitude noise
    if not abnormal:
        return _with_anomaly(base, None)
    cxt, cyt = _pick(rng, r < 0.5, xx, yy)
    mass = _blob(rng, xx, yy, cxt, cyt, rng.uniform(0.09, 0.16), rng.uniform(0.8, 1.25), 0.45)
    tumour = 225.0 + 10.0 * _texture(rng, n, _px(n, 1.5))
    return _with_anomaly(base, np.where(mass, np.maximum(tumour, base + 35.0), base))


def _liver(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    """Axial abdominal CT: body wall, liver on the image left, spleen, kidneys, aorta, spine."""
    xx, yy = _grid(n)
    cx, cy = rng.normal(0.0, 0.03), rng.normal(0.05, 0.03)
    r = _radius(xx, yy, cx, cy, rng.uniform(0.84, 0.92), rng.uniform(0.62, 0.7))
    img = np.full((n, n), 8.0)  # air
    img[r < 1.0] = 70.0  # subcutaneous fat
    img[r < 0.93] = 125.0  # muscle wall
    img[r < 0.86] = 100.0  # bowel and soft tissue
    img += 10.0 * _texture(rng, n, _px(n, 2.5)) * (r < 0.86)
    lx, ly = cx - rng.uniform(0.28, 0.38), cy - rng.uniform(0.02, 0.12)
    la, lb = rng.uniform(0.34, 0.42), rng.uniform(0.36, 0.44)
    lr, lt = _polar(xx, yy, lx, ly, la, lb, rng.normal(0.3, 0.1))
    liver = (lr < _wobble(rng, lt, 0.12, (2, 3))) & (r < 0.84)
    img[liver] = rng.uniform(140.0, 155.0)
    img[(_radius(xx, yy, cx + 0.5, cy - 0.1, 0.13, 0.2, -0.5) < 1.0) & (r < 0.84)] = 140.0  # spleen
    for side in (-1.0, 1.0):
        img[_radius(xx, yy, cx + side * 0.33, cy + 0.33, 0.09, 0.13, side * 0.4) < 1.0] = 155.0
    img[_radius(xx, yy, cx + 0.1, cy + 0.25, 0.055, 0.055) < 1.0] = 165.0  # aorta
    img[_radius(xx, yy, cx, cy + 0.4, 0.12, 0.1) < 1.0] = 235.0  # vertebral body
    img[_radius(xx, yy, cx, cy + 0.57, 0.09, 0.07) < 1.0] = 225.0  # vertebral arch
    img[_radius(xx, yy, cx, cy + 0.55, 0.04, 0.035) < 1.0] = 45.0  # spinal canal
    img = ndimage.gaussian_filter(img * rng.uniform(0.93, 1.07), _px(n, 0.7))
    base = img + rng.normal(0.0, 6.0, (n, n))
    if not abnormal:
        return _with_anomaly(base, None)
    cxl, cyl = _pick(rng, liver & (lr < 0.55), xx, yy)
    lesion = _blob(rng, xx, yy, cxl, cyl, rng.uniform(0.07, 0.13), rng.uniform(0.85, 1.2))
    lesion &= liver
    dark = rng.uniform(60.0, 80.0) + 6.0 * _texture(rng, n, _px(n, 1.5))
    return _with_anomaly(base, np.where(lesion, np.minimum(dark, base - 35.0), base))


# OCT layers from the inner surface of the retina down to Bruch's membrane: (thickness,
# intensity, thinning at the fovea).
_OCT_LAYERS = (
    (0.045, 190.0, 0.95),  # nerve fibre layer
    (0.090, 120.0, 0.9),  # ganglion cell and inner plexiform layers
    (0.050, 55.0, 0.85),  # inner nuclear layer
    (0.040, 130.0, 0.7),  # outer plexiform layer
    (0.110, 50.0, -0.2),  # outer nuclear layer (thicker at the fovea)
    (0.028, 185.0, 0.0),  # ellipsoid zone
    (0.040, 225.0, 0.0),  # retinal pigment epithelium
)


def _oct(rng: np.random.Generator, n: int, abnormal: bool, curved: bool) -> Rendered:
    """OCT B-scan: bowl-shaped bright/dark retinal layers with a foveal pit, choroid, speckle."""
    xx, yy = _grid(n)
    x = xx[0]
    x0 = rng.normal(0.0, 0.1)
    if curved:
        bruch = rng.uniform(0.2, 0.35) - rng.uniform(0.25, 0.4) * (x - x0) ** 2
    else:
        bruch = rng.uniform(0.05, 0.2) - rng.uniform(0.03, 0.12) * (x - x0) ** 2
    bruch = bruch + rng.normal(0.0, 0.05) * x
    pit = np.exp(-((x - x0 - rng.normal(0.0, 0.04)) ** 2) / (2 * rng.uniform(0.12, 0.18) ** 2))
    scale = rng.uniform(0.9, 1.15)
    thick = [t * scale * (1.0 - f * pit) * (1.0 + 0.1 * np.cos(2 * x)) for t, _, f in _OCT_LAYERS]
    bounds = [bruch]  # built upwards: bounds[i] is the top of layer i once reversed
    for t in reversed(thick):
        bounds.append(bounds[-1] - t)
    bounds.reverse()  # bounds[0]: inner surface ... bounds[-1]: Bruch's membrane
    drusen = abnormal and not curved and rng.random() < 0.5
    if drusen:  # dome-shaped deposits lift the RPE and ellipsoid zone, thinning the ONL
        bumps = np.zeros_like(x)
        for _ in range(int(rng.integers(2, 5))):
            xd, wd = rng.uniform(-0.65, 0.65), rng.uniform(0.05, 0.09)
            bumps += rng.uniform(0.08, 0.14) * np.exp(-((x - xd) ** 2) / (2 * wd**2))
        for i in (5, 6, 7):
            bounds[i] = bounds[i] - bumps
    img = np.full((n, n), 10.0)  # vitreous
    for (_, value, _), upper, lower in zip(_OCT_LAYERS, bounds[:-1], bounds[1:], strict=True):
        img[(yy >= upper) & (yy < lower)] = value * rng.uniform(0.9, 1.1)
    depth = yy - bruch
    choroid = depth >= 0
    texture = 1.0 + 0.3 * _texture(rng, n, _px(n, 2))
    img[choroid] = (110.0 * np.exp(-depth / 0.35) * texture)[choroid]
    if drusen:
        img[(yy >= bounds[7]) & (yy < bruch)] = 150.0  # drusen material
    img = ndimage.gaussian_filter(img * rng.uniform(0.9, 1.1), _px(n, 0.6))
    speckle = ndimage.gaussian_filter(rng.gamma(4.0, 0.25, (n, n)), _px(n, 0.5))
    base = 8.0 + np.clip(img, 0.0, None) * speckle + rng.normal(0.0, 2.0, (n, n)) ** 2
    if not abnormal or drusen:
        return _with_anomaly(base, None)  # drusen are drawn into the anatomy itself
    # Fluid: a dark pocket spanning the outer plexiform and outer nuclear layers.
    col = int(np.clip((rng.uniform(-0.5, 0.5) + 1.0) / 2.0 * n, 0, n - 1))
    top, bottom = float(bounds[3][col]), float(bounds[5][col])
    ry = (bottom - top) / 2.0 * rng.uniform(1.0, 1.6)
    r, theta = _polar(xx, yy, float(x[col]), (top + bottom) / 2.0, ry * rng.uniform(1.8, 3.0), ry)
    pocket = (r < _wobble(rng, theta, 0.2, (2, 3))) & (yy > bounds[1]) & (yy < bounds[6])
    fluid = np.minimum(2.0 + 2.0 * np.abs(rng.standard_normal((n, n))), 0.3 * base)
    return _with_anomaly(base, np.where(pocket, fluid, base))


def _retina_resc(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    return _oct(rng, n, abnormal, curved=True)


def _retina_oct2017(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    image, _ = _oct(rng, n, abnormal, curved=False)
    return image, None


def _chest(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    """Frontal chest X-ray: dark lung fields, bright mediastinum, heart, spine, ribs, clavicles."""
    xx, yy = _grid(n)
    cx, cy = rng.normal(0.0, 0.03), rng.normal(0.0, 0.03)
    w = rng.uniform(0.92, 1.08)
    img = np.full((n, n), 35.0)
    body = _radius(xx, yy, cx, cy + 0.35, 0.95 * w, 1.45) < 1.0
    img[body] = 150.0
    lungs = np.zeros((n, n), dtype=bool)
    dome = cy + 0.5 + rng.normal(0.0, 0.03)
    for side in (-1.0, 1.0):
        lx = cx + side * 0.4 * w
        lr, lt = _polar(xx, yy, lx, cy - 0.02, rng.uniform(0.26, 0.3) * w, rng.uniform(0.6, 0.68))
        diaphragm = dome + (0.05 if side > 0 else 0.0) - 0.25 * (xx - lx) ** 2
        lungs |= (lr < _wobble(rng, lt, 0.06, (2, 3))) & (yy < diaphragm)
    density = np.broadcast_to(55.0 + 12.5 * (yy + 1.0), (n, n))  # denser towards the bases
    img[lungs] = density[lungs]
    img += 6.0 * _texture(rng, n, _px(n, 2)) * lungs  # vessels
    heart = _radius(xx, yy, cx + 0.12 * w, cy + 0.28, 0.3 * w, 0.24) < 1.0
    img[heart] = 185.0
    mediastinum = np.abs(xx[0] - cx) < 0.13 * w
    img[:, mediastinum] = 190.0  # mediastinum and spine
    img[:, np.abs(xx[0] - cx) < 0.06 * w] += 20.0
    lungs &= ~heart  # the visible lung fields
    lungs[:, mediastinum] = False
    rib_gap = rng.uniform(0.12, 0.14)
    for k in range(9):
        yk = cy - 0.6 + k * rib_gap + 0.35 * (np.abs(xx - cx) - 0.45 * w) ** 2
        img[(np.abs(yy - yk) < 0.025) & body] += 28.0  # ribs
    for side in (-1.0, 1.0):
        yc = cy - 0.68 + 0.12 * np.abs(xx - cx)
        clavicle = (np.abs(yy - yc) < 0.03) & (np.abs(xx - cx - side * 0.35 * w) < 0.28 * w)
        img[clavicle] += 45.0
    img = ndimage.gaussian_filter(img * rng.uniform(0.92, 1.08), _px(n, 1.2))
    base = img + rng.normal(0.0, 4.0, (n, n))
    if not abnormal:
        return _with_anomaly(base, None)
    core = ndimage.binary_erosion(lungs, iterations=2)
    cxo, cyo = _pick(rng, core if core.any() else lungs, xx, yy)
    patch = _blob(rng, xx, yy, cxo, cyo, rng.uniform(0.1, 0.18), rng.uniform(0.8, 1.3)) & lungs
    opacity = ndimage.gaussian_filter(patch.astype(np.float64), _px(n, 2.0))
    opacity *= rng.uniform(70.0, 95.0) * (1.0 + 0.15 * _texture(rng, n, _px(n, 2)))
    return _with_anomaly(base + opacity, None)


def _stamp(
    img: Array,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    angle: float,
    color: Array,
    rng: np.random.Generator,
    irregular: float,
) -> None:
    """Paint one soft-edged nucleus with an irregular outline (pixel units) in place."""
    n = img.shape[0]
    reach = int(np.ceil(max(ax, ay) * 1.6 + 2))
    r0, r1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, n)
    c0, c1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, n)
    if r0 >= r1 or c0 >= c1:
        return
    yy = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
    xx = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
    r, theta = _polar(xx, yy, cx, cy, ax, ay, angle)
    rim = r / _wobble(rng, theta, irregular, (2, 3, 4))
    inner = np.clip(1.0 - rim, 0.0, 1.0)[..., None]
    alpha = np.clip(inner * max(ax, ay) * 1.2, 0.0, 1.0)
    shade = color * (1.0 - 0.25 * inner)  # denser chromatin towards the centre
    patch = img[r0:r1, c0:c1]
    patch += (shade - patch) * alpha


def _nuclei(
    img: Array, cx: Array, cy: Array, ax: Array, ay: Array, angle: Array, colors: Array
) -> None:
    """Paint many soft-edged elliptic nuclei into an RGB float image in place.

    Same drawing as :func:`_stamp` with a plain elliptic outline, with every argument an array
    holding one value per nucleus (``colors``: one RGB row each); the geometry of all nuclei is
    computed at once and only the compositing loops.
    """
    n = img.shape[0]
    reach = int(np.ceil(np.max(np.maximum(ax, ay), initial=0.0) * 1.6 + 2))
    side, margin = 2 * reach + 1, reach + 1
    top = np.floor(cy).astype(np.intp) - reach
    left = np.floor(cx).astype(np.intp) - reach
    steps = np.arange(side)
    yy = (top[:, None] + steps + 0.5)[:, :, None] - cy[:, None, None]
    xx = (left[:, None] + steps + 0.5)[:, None, :] - cx[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    rim = np.sqrt(
        ((xx * cos + yy * sin) / ax[:, None, None]) ** 2
        + ((yy * cos - xx * sin) / ay[:, None, None]) ** 2
    )
    inner = np.clip(1.0 - rim, 0.0, 1.0)[..., None]
    alpha = np.clip(inner * (1.2 * np.maximum(ax, ay))[:, None, None, None], 0.0, 1.0)
    shade = colors[:, None, None, :] * (1.0 - 0.25 * inner)
    canvas = np.pad(img, ((margin, margin), (margin, margin), (0, 0)))
    for k in range(len(cx)):
        r0, c0 = top[k] + margin, left[k] + margin
        patch = canvas[r0 : r0 + side, c0 : c0 + side]
        patch += (shade[k] - patch) * alpha[k]
    img[:] = canvas[margin : margin + n, margin : margin + n]


def _histopathology(rng: np.random.Generator, n: int, abnormal: bool) -> Rendered:
    """H&E-like tile: pink eosin stroma with pale gaps and purple round nuclei."""
    pink = np.array([232.0, 160.0, 195.0]) + rng.normal(0.0, 6.0, 3)
    img = pink * (1.0 + 0.06 * _texture(rng, n, _px(n, 3))[..., None])
    gaps = _texture(rng, n, _px(n, 6)) > rng.uniform(1.2, 1.8)
    img[gaps] = np.array([246.0, 232.0, 240.0])
    hema = np.array([105.0, 55.0, 150.0]) + rng.normal(0.0, 6.0, 3)
    scale = n / 128.0
    count = int(rng.integers(70, 110))
    params = rng.uniform(size=(count, 6))  # x, y, radius, elongation, angle, stain
    radius = (2.0 + 1.2 * params[:, 2]) * scale
    colors = hema * (0.9 + 0.22 * params[:, 5:6])
    elongation = 0.8 + 0.45 * params[:, 3]
    xy = params[:, :2] * n
    _nuclei(img, xy[:, 0], xy[:, 1], radius * elongation, radius, params[:, 4] * np.pi, colors)
    base = img + rng.normal(0.0, 3.0, img.shape)
    if not abnormal:
        return _with_anomaly(base, None)
    changed = base.copy()
    ccx, ccy = rng.uniform(0.25 * n, 0.75 * n, 2)
    spread = rng.uniform(0.08, 0.14) * n
    atypical = np.array([60.0, 20.0, 95.0]) + rng.normal(0.0, 5.0, 3)
    for _ in range(int(rng.integers(7, 13))):
        r = rng.uniform(4.5, 7.0) * scale
        dx, dy = rng.normal(0.0, spread, 2)
        angle, aspect = rng.uniform(0.0, np.pi), rng.uniform(0.7, 1.4)
        _stamp(changed, ccx + dx, ccy + dy, r * aspect, r, angle, atypical, rng, 0.35)
    return _with_anomaly(changed, None)


_RENDERERS: dict[str, Callable[[np.random.Generator, int, bool], Rendered]] = {
    "Brain": _brain,
    "Liver": _liver,
    "Retina_RESC": _retina_resc,
    "Retina_OCT2017": _retina_oct2017,
    "Chest": _chest,
    "Histopathology": _histopathology,
}


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


def _stream(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent random stream for (seed, keys...), stable across runs and platforms."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _extension(name: str) -> str:
    return ".jpeg" if name == "Retina_OCT2017" else ".png"


def _save_image(array: Array, path: Path) -> None:
    """Write an image under a temporary name in the same folder, then move it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image = Image.fromarray(array)
    try:
        if path.suffix == ".jpeg":
            image.save(tmp, format="JPEG", quality=95)
        else:
            image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _file_name(index: int, ext: str) -> str:
    return f"{index:05d}{ext}"


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}")
    return int(value)


def write_benchmark(
    out: str | Path,
    size: int = 12,
    seed: int = 0,
    image_size: int = 128,
    overwrite: bool = False,
) -> dict[str, dict[str, int]]:
    """Write the synthetic six-dataset benchmark in the MVFA/BMAD layout under ``out``.

    Each of Brain, Liver, Retina_RESC, Retina_OCT2017, Chest and Histopathology gets a
    ``<Name>_AD`` folder with ``valid`` and ``test`` splits of normal (``good``) and abnormal
    (``Ungood``) images, pixel masks for Brain, Liver and Retina_RESC, and few-shot support lists
    ``fewshot_seed/<Name>/<K>-shot.txt`` for K = 2, 4, 8, 16. Output is deterministic per seed.

    Args:
        out: Folder to write into (``--out``); created if missing, and must be empty unless
            ``overwrite`` is set.
        size: Images per class in each ``test`` split (``--size``); ``valid`` holds
            ``max(16, size)`` per class so that every 16-shot list exists.
        seed: Random seed (``--seed``); the same seed writes byte-identical files.
        image_size: Side of the square images in pixels (``--image_size``), at least 32.
        overwrite: Allow a non-empty ``out`` (``--overwrite``); the dataset folders this
            function writes (``<Name>_AD`` and ``fewshot_seed/<Name>``) are replaced, anything
            else in ``out`` is left alone.

    Returns:
        Number of images (both classes together) per dataset and split, e.g.
        ``{"Brain": {"valid": 32, "test": 24}, ...}``.

    Raises:
        UserError: If an argument is out of range, ``out`` is a file, or ``out`` is not empty
            and ``overwrite`` is false.
    """
    size = _check_int(size, "size", 1)
    seed = _check_int(seed, "seed", 0)
    image_size = _check_int(image_size, "image_size", _MIN_IMAGE_SIZE)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"output folder {root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise UserError(f"output folder {root} is not empty; use an empty folder or --overwrite")

    counts: dict[str, dict[str, int]] = {}
    for name in DATASETS:
        render = _RENDERERS[name]
        ext = _extension(name)
        ds_root = root / f"{name}_AD"
        shot_root = root / "fewshot_seed" / name
        for stale in (ds_root, shot_root):
            if stale.exists():
                shutil.rmtree(stale)
        counts[name] = {}
        for split in _SPLITS:
            per_class = max(_FEWSHOT_POOL, size) if split == "valid" else size
            for label in _CLASSES:
                img_dir = ds_root / split / label / "img"
                img_dir.mkdir(parents=True, exist_ok=True)
                mask_dir = ds_root / split / label / "anomaly_mask"
                with_mask = label == "Ungood" and name in MASK_DATASETS
                if with_mask:
                    mask_dir.mkdir(parents=True, exist_ok=True)
                for index in range(per_class):
                    rng = _stream(seed, name, split, label, index)
                    image, mask = render(rng, image_size, label == "Ungood")
                    file_name = _file_name(index, ext)
                    if with_mask:
                        assert mask is not None
                        _save_image(mask.astype(np.uint8) * 255, mask_dir / file_name)
                    _save_image(image, img_dir / file_name)
            counts[name][split] = 2 * per_class
        shot_root.mkdir(parents=True, exist_ok=True)
        for k in SHOTS:
            rng = _stream(seed, "fewshot", name, k)
            lines = []
            for tag in ("a", "n"):  # abnormal (valid/Ungood) first, then normal (valid/good)
                picks = sorted(int(i) for i in rng.choice(_FEWSHOT_POOL, size=k, replace=False))
                lines.append(f"{tag}-0: " + " ".join(_file_name(i, ext) for i in picks))
            _save_text("\n".join(lines) + "\n", shot_root / f"{k}-shot.txt")
    return counts
