"""The fixed 11x augmentation of the few-shot support images (MVFA-AD).

Every support image yields 11 samples: the original, four rotations, four translations, a
horizontal and a vertical flip. Rotations and translations use ``F.affine_grid`` with the matrix

    theta = [[cos a, -sin a, tx],
             [sin a,  cos a, ty]]

which maps each *output* location ``q`` (normalised coordinates in [-1, 1], x to the right, y
downwards, ``align_corners=False``) to the *input* location ``p = R(a) q + t`` that is sampled
(bilinear, reflection padding). Content therefore moves from ``p`` to ``q = R(-a) (p - t)``:

* Translation ``(tx, ty)`` moves content by ``(-tx, -ty)`` in normalised coordinates, i.e. by
  ``tx / 2`` of the width and ``ty / 2`` of the height: ``tx = +0.1`` moves content 5% of the width
  to the **left** (towards column 0), ``ty = +0.1`` moves it 5% of the height **up** (towards row
  0).
* Rotation angle ``a > 0`` turns content **counter-clockwise** by ``a`` as the image is displayed
  (row 0 at the top) about the image centre; ``a < 0`` turns it clockwise. For non-square images
  the rotation acts on normalised coordinates and is not rigid (all BMAD images are square).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["AUGMENT_FACTOR", "ROTATIONS", "TRANSLATIONS", "augment"]

ROTATIONS: tuple[float, ...] = (-math.pi / 8, -math.pi / 16, math.pi / 16, math.pi / 8)
"""Rotation angles in radians, in output order (positive = counter-clockwise as displayed)."""

TRANSLATIONS: tuple[tuple[float, float], ...] = ((0.1, 0.1), (0.1, -0.1), (-0.1, 0.1), (-0.1, -0.1))
"""``(tx, ty)`` in normalised coordinates, in output order (content moves by ``(-tx, -ty)``)."""

AUGMENT_FACTOR = 1 + len(ROTATIONS) + len(TRANSLATIONS) + 2
"""Number of output samples per input sample (11)."""


def _affine(x: torch.Tensor, a: float, tx: float, ty: float) -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) through ``theta = [[cos a, -sin a, tx], [sin a, cos a, ty]]``."""
    c, s = math.cos(a), math.sin(a)
    theta = torch.tensor([[c, -s, tx], [s, c, ty]], dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the fixed 11x augmentation to images and their masks.

    The output holds 11 blocks of N samples, in this order: the N originals; rotations by
    -pi/8, -pi/16, +pi/16, +pi/8; translations by (+0.1, +0.1), (+0.1, -0.1), (-0.1, +0.1),
    (-0.1, -0.1); a horizontal flip (left-right); a vertical flip (top-bottom). Block ``k``
    holds the k-th transform of samples ``0..N-1``. See the module docstring for the sign
    conventions. Masks get exactly the same geometric transform (resampled together with the
    images), then are binarised at > 0.5.

    Args:
        images: float tensor (N, C, H, W) in [0, 1] (C = 3 for RGB).
        masks: tensor (N, 1, H, W) with values in {0, 1}.

    Returns:
        ``(images, masks)``: images float (11 N, C, H, W) of the input dtype; masks (11 N, 1, H, W)
        with values in {0., 1.}, of the mask dtype if floating, else float32.

    Raises:
        ValueError: If the shapes do not match or images are not floating point.
    """
    if images.ndim != 4 or masks.ndim != 4:
        raise ValueError(
            f"augment expects images (N,C,H,W) and masks (N,1,H,W), got {tuple(images.shape)} "
            f"and {tuple(masks.shape)}"
        )
    n, c, h, w = images.shape
    if masks.shape != (n, 1, h, w):
        raise ValueError(
            f"masks must have shape {(n, 1, h, w)} to match images, got {tuple(masks.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"augment expects float images in [0, 1], got {images.dtype}")
    mask_dtype = masks.dtype if masks.is_floating_point() else torch.float32

    both = torch.cat([images, masks.to(device=images.device, dtype=images.dtype)], dim=1)
    blocks = [both]
    blocks += [_affine(both, a, 0.0, 0.0) for a in ROTATIONS]
    blocks += [_affine(both, 0.0, tx, ty) for tx, ty in TRANSLATIONS]
    blocks.append(torch.flip(both, dims=[3]))
    blocks.append(torch.flip(both, dims=[2]))
    out = torch.cat(blocks, dim=0)
    out_images = out[:, :c].contiguous()
    out_masks = (out[:, c:] > 0.5).to(mask_dtype)
    return out_images, out_masks
