"""Per-modality image generators of the synthetic benchmark.

Each renders a normal image from ``rng`` and, when ``abnormal``, overlays the anomaly on that very
image, so that the mask is exactly the set of changed pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from iqeclip.data.synth.geometry import (
    Array,
    Rendered,
    _blob,
    _grid,
    _pick,
    _polar,
    _px,
    _radius,
    _texture,
    _with_anomaly,
    _wobble,
)


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
