"""Tests for the fixed 11x few-shot augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from iqeclip.data.augment import AUGMENT_FACTOR, ROTATIONS, TRANSLATIONS, augment

SIZE = 64
# Two marked samples: a bright 8x8 square off-centre (rows, cols), one per sample.
SQUARES = [(slice(12, 20), slice(40, 48)), (slice(38, 46), slice(14, 22))]


def _marked() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.full((len(SQUARES), 3, SIZE, SIZE), 0.1)
    masks = torch.zeros(len(SQUARES), 1, SIZE, SIZE)
    for i, (rows, cols) in enumerate(SQUARES):
        images[i, :, rows, cols] = torch.tensor([0.9, 0.6, 0.3])[:, None, None]
        masks[i, 0, rows, cols] = 1.0
    return images, masks


def _centroid(weights: torch.Tensor) -> tuple[float, float]:
    """(row, col) centroid of a non-negative (H, W) map, in pixels."""
    weights = weights.double()
    rows = torch.arange(weights.shape[0], dtype=torch.float64)[:, None]
    cols = torch.arange(weights.shape[1], dtype=torch.float64)[None, :]
    total = weights.sum()
    return float((weights * rows).sum() / total), float((weights * cols).sum() / total)


def _image_centroid(image: torch.Tensor) -> tuple[float, float]:
    return _centroid((image[0] - 0.1).clamp(min=0))  # bright square over the background


def _to_norm(row: float, col: float) -> tuple[float, float]:
    """Pixel (row, col) -> normalised (x, y), align_corners=False."""
    return (2 * col + 1) / SIZE - 1, (2 * row + 1) / SIZE - 1


def _to_pixel(x: float, y: float) -> tuple[float, float]:
    return ((y + 1) * SIZE - 1) / 2, ((x + 1) * SIZE - 1) / 2


def _expected(k: int, row: float, col: float) -> tuple[float, float]:
    """Documented position of content at (row, col) after transform block k."""
    x, y = _to_norm(row, col)
    if k == 0:
        return row, col
    if 1 <= k <= 4:
        a = ROTATIONS[k - 1]  # content moves to R(-a) p
        return _to_pixel(math.cos(a) * x + math.sin(a) * y, -math.sin(a) * x + math.cos(a) * y)
    if 5 <= k <= 8:
        tx, ty = TRANSLATIONS[k - 5]
        return _to_pixel(x - tx, y - ty)
    if k == 9:
        return row, SIZE - 1 - col
    return SIZE - 1 - row, col


def test_constants() -> None:
    assert AUGMENT_FACTOR == 11
    assert list(ROTATIONS) == [-math.pi / 8, -math.pi / 16, math.pi / 16, math.pi / 8]
    assert TRANSLATIONS == ((0.1, 0.1), (0.1, -0.1), (-0.1, 0.1), (-0.1, -0.1))


def test_shapes_dtype_and_originals_first() -> None:
    images, masks = _marked()
    out_images, out_masks = augment(images, masks)
    n = images.shape[0]
    assert out_images.shape == (11 * n, 3, SIZE, SIZE)
    assert out_masks.shape == (11 * n, 1, SIZE, SIZE)
    assert out_images.dtype == images.dtype and out_masks.dtype == torch.float32
    assert torch.equal(out_images[:n], images)
    assert torch.equal(out_masks[:n], masks)
    assert torch.equal(out_images[9 * n : 10 * n], images.flip(3))
    assert torch.equal(out_images[10 * n :], images.flip(2))
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert float(out_images.min()) >= 0.0 and float(out_images.max()) <= 1.0 + 1e-6


def test_mask_follows_image_and_documented_positions() -> None:
    images, masks = _marked()
    out_images, out_masks = augment(images, masks)
    n = images.shape[0]
    for i, (rows, cols) in enumerate(SQUARES):
        row0 = (rows.start + rows.stop - 1) / 2
        col0 = (cols.start + cols.stop - 1) / 2
        for k in range(AUGMENT_FACTOR):
            j = k * n + i  # block k holds transform k of sample i
            img_rc = _image_centroid(out_images[j])
            mask_rc = _centroid(out_masks[j, 0])
            exp_rc = _expected(k, row0, col0)
            where = f"block {k}, sample {i}"
            assert math.dist(img_rc, mask_rc) < 1.0, where
            assert math.dist(img_rc, exp_rc) < 0.3, where
            assert math.dist(mask_rc, exp_rc) < 1.0, where
            assert 50 <= float(out_masks[j].sum()) <= 80, where  # the 8x8 square survives


def test_translation_direction() -> None:
    """tx = +0.1 moves content left by 5% of the width; ty = +0.1 moves it up by 5%."""
    images, masks = _marked()
    out_images, _ = augment(images[:1], masks[:1])
    row0, col0 = _image_centroid(out_images[0])
    shift = 0.05 * SIZE
    for k, (tx, ty) in enumerate(TRANSLATIONS, start=5):
        row, col = _image_centroid(out_images[k])
        assert col - col0 == pytest.approx(-math.copysign(shift, tx), abs=0.1)
        assert row - row0 == pytest.approx(-math.copysign(shift, ty), abs=0.1)


def test_rotation_keeps_radius_and_turns_counter_clockwise() -> None:
    """Angle a > 0 turns content counter-clockwise as displayed (row 0 at the top)."""
    images, masks = _marked()
    out_images, out_masks = augment(images[:1], masks[:1])
    centre = (SIZE - 1) / 2

    def polar(rc: tuple[float, float]) -> tuple[float, float]:
        dx, dy_up = rc[1] - centre, centre - rc[0]  # y pointing up, as displayed
        return math.hypot(dx, dy_up), math.atan2(dy_up, dx)

    r0, phi0 = polar(_image_centroid(out_images[0]))
    for k, a in enumerate(ROTATIONS, start=1):
        for rc in (_image_centroid(out_images[k]), _centroid(out_masks[k, 0])):
            r, phi = polar(rc)
            assert r == pytest.approx(r0, abs=0.5)
            assert phi - phi0 == pytest.approx(a, abs=0.03)


def test_flips_mirror() -> None:
    images, masks = _marked()
    out_images, out_masks = augment(images[:1], masks[:1])
    rows, cols = SQUARES[0]
    hflip = torch.zeros(SIZE, SIZE)
    hflip[rows, SIZE - cols.stop : SIZE - cols.start] = 1
    vflip = torch.zeros(SIZE, SIZE)
    vflip[SIZE - rows.stop : SIZE - rows.start, cols] = 1
    assert torch.equal(out_masks[9, 0], hflip)
    assert torch.equal(out_masks[10, 0], vflip)
    assert torch.equal(out_images[9, 0] > 0.5, hflip.bool())
    assert torch.equal(out_images[10, 0] > 0.5, vflip.bool())


def test_integer_masks_and_bad_shapes() -> None:
    images, masks = _marked()
    _, out_masks = augment(images.double(), masks.to(torch.uint8))
    assert out_masks.dtype == torch.float32
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError):
        augment(images, masks[:1])
    with pytest.raises(ValueError):
        augment(images[0], masks[0])
    with pytest.raises(ValueError):
        augment((images * 255).to(torch.uint8), masks)
