"""Reading images and masks into tensors.

The reference pre-processing is PIL's bicubic resize of the 8-bit RGB image followed by a division
by 255 (bit-exact with ``transforms.Resize((size, size), BICUBIC)`` + ``ToTensor()``); no
mean/std normalisation is applied here.

16-bit images (PIL modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` and the 32-bit ``I``) are
mapped to 8 bit by scaling the *full* 16-bit range: ``v8 = round(clip(v, 0, 65535) / 257)``, so
0 -> 0 and 65535 -> 255. There is no per-image contrast stretching: a 12-bit scan stored in a
16-bit file keeps its (dark) appearance, and the same pixel value always maps to the same grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from iqeclip.errors import UserError

__all__ = ["load_image", "load_mask", "to_float"]

_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"image size must be a positive integer, got {size!r}")


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image; any failure becomes a :class:`UserError`."""
    try:
        with Image.open(path) as im:
            im.load()  # force decoding so that truncated files fail here
            return im.copy()
    except FileNotFoundError:
        raise UserError(f"cannot read {what} {path}: no such file") from None
    except UnidentifiedImageError:
        reason = "not an image file (unrecognised format)"
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            reason = "empty file"
        raise UserError(f"cannot read {what} {path}: {reason}") from None
    except Exception as exc:  # any decoder failure is a problem with the user's file
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise UserError(f"cannot read {what} {path}: {reason or type(exc).__name__}") from None


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer grey image to mode ``L`` by scaling the full 16-bit range."""
    values = np.asarray(im, dtype=np.float64)
    values = np.clip(values, 0.0, 65535.0) / 257.0
    return Image.fromarray(np.rint(values).astype(np.uint8))


def load_image(path: Path, size: int) -> torch.Tensor:
    """Read an image as an 8-bit RGB square.

    Grey, palette, RGB, RGBA (alpha dropped) and 16-bit images are accepted; 16-bit images are
    scaled as described in the module docstring.

    Args:
        path: The image file.
        size: Side of the output in pixels.

    Returns:
        uint8 tensor of shape (3, size, size).

    Raises:
        UserError: ``cannot read image <path>: <reason>`` for a missing, empty, truncated or
            non-image file, or a non-positive size.
    """
    _check_size(size)
    im = _open(path, "image")
    if im.mode in _WIDE_MODES:
        im = _wide_to_8bit(im)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None
    rgb = rgb.resize((size, size), Image.BICUBIC)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_mask(path: Path, size: int) -> torch.Tensor:
    """Read an anomaly mask as a boolean square.

    The mask is converted to grey (``L``; 16-bit masks with values above 255 are scaled like
    images, values up to 255 are kept), resized with nearest neighbour and binarised: if the
    mask's maximum is <= 1 it is a 0/1 mask and every value > 0 is anomalous, otherwise values
    >= 128 are anomalous (i.e. ``ToTensor()(mask) > 0.5``).

    Args:
        path: The mask file.
        size: Side of the output in pixels.

    Returns:
        bool tensor of shape (size, size), True where anomalous.

    Raises:
        UserError: ``cannot read mask <path>: <reason>`` for an unreadable file.
    """
    _check_size(size)
    im = _open(path, "mask")
    if im.mode in _WIDE_MODES:
        values = np.asarray(im, dtype=np.float64)
        if values.max(initial=0.0) > 255:
            im = _wide_to_8bit(im)
        else:
            im = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    try:
        grey = im.convert("L")
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read mask {path}: {exc}") from None
    zero_one = int(np.asarray(grey).max(initial=0)) <= 1
    array = np.asarray(grey.resize((size, size), Image.NEAREST))
    binary = array > 0 if zero_one else array >= 128
    return torch.from_numpy(binary.copy())


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """Scale 8-bit images to [0, 1].

    Args:
        images_uint8: uint8 tensor of any shape, e.g. (3, H, W) or (N, 3, H, W).

    Returns:
        float32 tensor of the same shape, ``images_uint8 / 255``; no mean/std normalisation.

    Raises:
        TypeError: If the input is not uint8 (guards against dividing twice).
    """
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"to_float expects a uint8 tensor, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 255.0


def as_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Model input in [0, 1] on ``device`` from uint8 (read from disk) or float (augmented) images."""
    images = images.to(device, non_blocking=True)
    return to_float(images) if images.dtype == torch.uint8 else images
