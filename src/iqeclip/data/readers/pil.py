"""PIL images (PNG, JPEG, BMP, TIFF, incl. 16-bit): the model's reference input and masks.

Every image and mask is first turned upright by its EXIF orientation (``ImageOps.exif_transpose``:
a phone JPEG with orientation 6 is read as viewers show it, so masks drawn on it line up).
The reference pre-processing is PIL's bicubic resize of the 8-bit RGB image followed by a division
by 255 (bit-exact with ``transforms.Resize((size, size), BICUBIC)`` + ``ToTensor()``); no
mean/std normalisation is applied here.

16-bit images (PIL modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` and the 32-bit ``I``) are
mapped to 8 bit by scaling the *full* 16-bit range: ``v8 = round(clip(v, 0, 65535) / 257)``, so
0 -> 0 and 65535 -> 255. There is no per-image contrast stretching: a 12-bit scan stored in a
16-bit file keeps its (dark) appearance, and the same pixel value always maps to the same grey.

:func:`read_wide_image` is the other way in, used for 16-bit scans where intensity options
matter: it returns :class:`~iqeclip.data.readers.base.Slice` objects normalised by the rules of
:mod:`iqeclip.data.readers.intensity` (min-max per image by default), and
:func:`slice_to_uint8_rgb` turns any reader's slice into the model's ``(3, size, size)`` uint8
input with the same bicubic PIL resize as :func:`load_image`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import cannot_read
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity, normalise
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits, OverLimit
from iqeclip.errors import UserError, first_line

__all__ = [
    "WIDE_MODES",
    "as_input",
    "bomb_reason",
    "check_size",
    "image_header",
    "load_image",
    "load_mask",
    "open_image",
    "page_count",
    "read_wide_image",
    "slice_to_uint8_rgb",
    "to_float",
]

WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""PIL modes of 16/32-bit integer grey images (scaled to 8 bit as the module docstring says)."""


def check_size(size: int) -> None:
    """Raise a :class:`UserError` unless ``size`` (an output side in pixels) is a positive int."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"image size must be a positive integer, got {size!r}")


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def bomb_reason(what: str, exc: Image.DecompressionBombError, limits: Limits) -> str:
    """Why Pillow refused an image as a decompression bomb (from its header, over 179
    megapixels), as ``limits`` says it; with W x H when the traceback has it."""
    tb = exc.__traceback__
    while tb is not None:  # PIL's check sees the size; its message only gives the product
        frame = tb.tb_frame
        size = frame.f_locals.get("size") if "bomb" in frame.f_code.co_name else None
        if isinstance(size, tuple) and len(size) == 2:
            problem = limits.slice_problem(int(size[0]), int(size[1]), what)
            if problem is not None:
                return problem
        tb = tb.tb_next
    match = _BOMB_PIXELS.search(str(exc))
    pixels = f"{int(match.group(1))} pixels" if match else "too many pixels"
    return (
        f"{what} has {pixels}, larger than the {limits.megapixels:g}-megapixel limit"
        f"{limits.hint('max_megapixels')}"
    )


@contextmanager
def _header(path: Path, what: str, limits: Limits) -> Iterator[Image.Image]:
    """``path`` opened by Pillow, its header read and its first page's size checked against
    ``limits``: nothing decoded yet."""
    try:
        with warnings.catch_warnings():  # Pillow's own bomb warning: the limit below says it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        reason = bomb_reason(what, exc, limits)
        raise OverLimit(f"cannot read {what} {path}: {reason}", path, reason) from None
    with im:
        limits.check_slice(f"cannot read {what} {path}", *im.size, what, path=path)
        yield im


@contextmanager
def _failures(path: Path, what: str) -> Iterator[None]:
    """Any failure to open or decode ``path`` as a one-line
    :class:`~iqeclip.data.readers.errors.UnreadableFile`."""
    try:
        yield
    except UserError:
        raise
    except FileNotFoundError:
        raise cannot_read(what, path, "no such file") from None
    except UnidentifiedImageError:
        why = "not an image file (unrecognised format)"
        if Path(path).is_file() and Path(path).stat().st_size == 0:
            why = "empty file"
        raise cannot_read(what, path, why) from None
    except Exception as exc:  # any decoder failure is a problem with the user's file
        why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        raise cannot_read(what, path, why or type(exc).__name__) from None


def open_image(path: Path, what: str, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """Open and fully decode an image, turned upright by its EXIF orientation (as every viewer
    shows it); its size is checked against ``limits`` from the header first (an
    :class:`~iqeclip.data.readers.limits.OverLimit`), and any failure becomes a
    :class:`UserError`."""
    with _failures(path, what), _header(path, what, limits) as im:
        im.load()  # force decoding so that truncated files fail here
        ImageOps.exif_transpose(im, in_place=True)
        return im.copy()


def image_header(path: Path, limits: Limits = DEFAULT_LIMITS) -> Declared:
    """The pages of an image file and their pixels, from its header (no page is decoded),
    checked against ``limits``: each page's size, the page count, their pixels together.

    Raises:
        UserError: ``cannot read image <path>: <reason>`` for a file Pillow cannot open, or an
            :class:`~iqeclip.data.readers.limits.OverLimit` naming the limit.
    """
    where = f"cannot read image {path}"
    with _failures(path, "image"), _header(path, "image", limits) as im:
        n = int(getattr(im, "n_frames", 1))
        limits.check_input(where, n, 0, "pages", path)  # the count, then each page's header
        pixels = 0
        for page in range(n):
            im.seek(page)
            limits.check_slice(where, *im.size, f"page {page}" if n > 1 else "image", path)
            pixels += math.prod(im.size)
        limits.check_input(where, n, pixels, "pages", path)
        return Declared(n, pixels)


def _wide_to_8bit(im: Image.Image) -> Image.Image:
    """Map a 16/32-bit integer grey image to mode ``L`` by scaling the full 16-bit range."""
    values = np.asarray(im, dtype=np.float64)
    values = np.clip(values, 0.0, 65535.0) / 257.0
    return Image.fromarray(np.rint(values).astype(np.uint8))


def load_image(path: Path, size: int, limits: Limits = DEFAULT_LIMITS) -> torch.Tensor:
    """Read an image as an 8-bit RGB square.

    Grey, palette, RGB, RGBA (alpha dropped) and 16-bit images are accepted; 16-bit images are
    scaled as described in the module docstring.

    Args:
        path: The image file.
        size: Side of the output in pixels.
        limits: The largest image read (checked from the header).

    Returns:
        uint8 tensor of shape (3, size, size).

    Raises:
        UserError: ``cannot read image <path>: <reason>`` for a missing, empty, truncated,
            non-image or too large file, or a non-positive size.
    """
    check_size(size)
    im = open_image(path, "image", limits)
    if im.mode in WIDE_MODES:
        im = _wide_to_8bit(im)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise cannot_read("image", path, str(exc)) from None
    rgb = rgb.resize((size, size), Image.BICUBIC)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_mask(path: Path, size: int, limits: Limits = DEFAULT_LIMITS) -> torch.Tensor:
    """Read an anomaly mask as a boolean square.

    The mask is converted to grey (``L``; 16-bit masks with values above 255 are scaled like
    images, values up to 255 are kept), resized with nearest neighbour and binarised: if the
    mask's maximum is <= 1 it is a 0/1 mask and every value > 0 is anomalous, otherwise values
    >= 128 are anomalous (i.e. ``ToTensor()(mask) > 0.5``).

    Args:
        path: The mask file.
        size: Side of the output in pixels.
        limits: The largest mask read (checked from the header).

    Returns:
        bool tensor of shape (size, size), True where anomalous.

    Raises:
        UserError: ``cannot read mask <path>: <reason>`` for an unreadable or too large file.
    """
    check_size(size)
    im = open_image(path, "mask", limits)
    if im.mode in WIDE_MODES:
        values = np.asarray(im, dtype=np.float64)
        if values.max(initial=0.0) > 255:
            im = _wide_to_8bit(im)
        else:
            im = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
    try:
        grey = im.convert("L")
    except (ValueError, OSError) as exc:
        raise cannot_read("mask", path, str(exc)) from None
    zero_one = int(np.asarray(grey).max(initial=0)) <= 1
    array = np.asarray(grey.resize((size, size), Image.NEAREST))
    binary = array > 0 if zero_one else array >= 128
    return torch.from_numpy(binary.copy())


def page_count(path: Path) -> int:
    """How many pages (frames) an image file holds, from its header; 1 for a file PIL cannot
    open or count (reading it names the problem)."""
    try:
        with warnings.catch_warnings():  # the size is checked where the file is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(getattr(im, "n_frames", 1))
    except Exception:  # a corrupt header, a bomb: reading the file names the problem
        return 1


def display_rgb(path: Path, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """An image as shown beside its map: upright, 8-bit RGB by :func:`load_image`'s rule
    (16-bit greys scaled over the full range, not clipped), at its own size."""
    im = open_image(path, "image", limits)
    if im.mode in WIDE_MODES:
        im = _wide_to_8bit(im)
    return np.asarray(im.convert("RGB"))


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


def _pages(path: Path, limits: Limits) -> list[Image.Image]:
    """All pages of an image file (one for most files; several for a multi-page TIFF), once
    their header sizes passed ``limits``."""
    image_header(path, limits)  # every page's size, before any page is decoded
    first = open_image(path, "image", limits)  # validates the file with load_image's messages
    pages = [first]
    page = 0
    try:
        with Image.open(path) as im:
            for page in range(1, int(getattr(im, "n_frames", 1))):
                im.seek(page)
                im.load()
                upright = im.copy()
                ImageOps.exif_transpose(upright, in_place=True)
                pages.append(upright)
    except Exception as exc:  # a broken later page is a problem with the user's file
        raise cannot_read("image", path, f"page {page}: {first_line(exc)}") from None
    return pages


def _page_slice(im: Image.Image, path: Path, index: int | None, intensity: Intensity) -> Slice:
    mode = im.mode
    if mode in WIDE_MODES:
        image, levels = normalise(np.asarray(im), intensity, FULL_RANGE_16)
    elif mode == "F":
        image, levels = normalise(np.asarray(im), intensity)
    elif mode in ("L", "LA", "1"):
        grey = np.asarray(im.convert("L"))
        image, levels = normalise(grey, intensity, ("8bit", lambda x: x / 255.0))
    else:
        try:
            rgb = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise cannot_read("image", path, str(exc)) from None
        colour_intensity = Intensity(percentile=intensity.percentile)
        image, levels = normalise(rgb, colour_intensity, ("8bit", lambda x: x / 255.0))
    return Slice(image=image, source=path, index=index, levels=levels)


# load_image's rule for 16/32-bit integer greys (the BMAD preprocessing): the full 16-bit range.
# 255 * v / 65535 rounds to the same 8-bit value as v / 257 (257 is odd, so v / 257 is never
# half-way between integers), so a slice read this way gives load_image's tensor exactly.
FULL_RANGE_16 = ("fullrange16", lambda x: np.clip(x, 0.0, 65535.0) / 65535.0)


def read_wide_image(
    path: Path, intensity: Intensity = DEFAULT_INTENSITY, limits: Limits = DEFAULT_LIMITS
) -> list[Slice]:
    """Read a PNG/TIFF (or any PIL image), with intensity options for 16-bit and float data.

    16/32-bit integer images follow :func:`load_image`'s rule by default (the full 16-bit range,
    so every command gives the same model input for the same file); float images are min-max
    normalised per image; a window or percentile option wins over both. 8-bit grey images are kept (``v / 255``) unless an option is
    given; colour images are kept (``v / 255``, (H, W, 3)) unless a percentile is given (windows
    do not apply to colour). Each page of a multi-page TIFF is a slice.

    Args:
        path: The image file.
        intensity: Window / percentile options.
        limits: The largest image read: each page's size, the pages and their pixels together,
            from the header before any page is decoded.

    Returns:
        One :class:`Slice` per page; ``index`` is the page for multi-page files, else None.

    Raises:
        UserError: ``cannot read image <path>: <reason>`` for a missing, undecodable or too
            large file.
    """
    path = Path(path)
    pages = _pages(path, limits)
    if len(pages) == 1:
        return [_page_slice(pages[0], path, None, intensity)]
    return [_page_slice(im, path, i, intensity) for i, im in enumerate(pages)]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] slice image as 8 bits, ``round(255 x)`` in double precision: the one rounding of
    the model input and of every picture shown of it (overlays, ``input.png``).

    Raises:
        ValueError: An image that is neither (H, W) nor (H, W, 3).
    """
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"slice image must be (H, W) or (H, W, 3), got shape {image.shape}")
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def slice_to_uint8_rgb(s: Slice, size: int) -> torch.Tensor:
    """Model input from a slice: the same pre-processing as :func:`load_image`.

    The [0, 1] image becomes 8 bit (``round(255 x)``), grey is replicated to RGB, and PIL's
    bicubic resize gives a square; an 8-bit image read by :func:`read_wide_image` gives exactly
    ``load_image``'s tensor.

    Args:
        s: A slice with image (H, W) or (H, W, 3) in [0, 1].
        size: Side of the output in pixels.

    Returns:
        uint8 tensor of shape (3, size, size).

    Raises:
        UserError: A non-positive size.
        ValueError: An image that is neither (H, W) nor (H, W, 3).
    """
    check_size(size)
    rgb = Image.fromarray(to_uint8(s.image)).convert("RGB").resize((size, size), Image.BICUBIC)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
