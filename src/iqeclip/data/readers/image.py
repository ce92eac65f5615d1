"""The reader of PIL images (:class:`ImageReader`: PNG, JPEG, BMP, TIFF) and the checks an
image file passes before a run (:func:`decoded`).

A one-page image is one 2-D picture, known from its header: it takes an image mask and writes no
names below its output stem. Before a run each image is opened once (:func:`decoded`): its
header size (every page's) against the limits, then one full decode, and refused with a one-line
reason for a missing, empty, truncated or corrupt file, a file with an image suffix whose content
is not an image, or pixels that do not convert to RGB (:func:`check_image_pixels`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import UnreadableFile, reason_about
from iqeclip.data.readers.limits import Declared, Limits
from iqeclip.data.readers.pil import (
    WIDE_MODES,
    bomb_reason,
    image_header,
    page_count,
    read_wide_image,
)
from iqeclip.data.readers.reader import FileReader, check_dims
from iqeclip.data.readers.reading import Reading
from iqeclip.errors import UserError, first_line

__all__ = ["IMAGE_SUFFIXES", "ImageReader", "check_image_pixels", "decoded"]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
"""Files :class:`ImageReader` reads with PIL (:func:`~iqeclip.data.readers.pil.read_wide_image`)."""

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_SAFE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})


def _bad(what: str, path: Path, reason: str) -> UnreadableFile:
    """``<what> <path>: <reason>``: a file refused before a run."""
    return UnreadableFile(f"{what} {path}: {reason}", path, reason)


def _magic_format(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _opened(path: Path, what: str, limits: Limits) -> Image.Image:
    """``path`` opened by PIL (its header read), or the reason it cannot be."""
    try:
        if path.is_dir():
            raise _bad(what, path, "is a folder, not an image file")
        n_bytes = path.stat().st_size
    except FileNotFoundError:
        raise _bad(what, path, "no such file") from None
    except OSError as exc:
        raise _bad(what, path, f"cannot read the file: {first_line(exc)}") from None
    if n_bytes == 0:
        raise _bad(what, path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # reported below as "larger than the limit"
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _bad(what, path, bomb_reason(what, exc, limits)) from None
    except UnidentifiedImageError:
        fmt = _magic_format(path)
        if fmt is not None:
            reason = f"truncated or corrupt {fmt} file ({n_bytes} bytes; PIL cannot read it)"
        else:
            reason = "not an image file (its content is in no known image format"
            reason += f", although its name ends in {path.suffix})" if path.suffix else ")"
        raise _bad(what, path, reason) from None
    except Exception as exc:  # any header parser failure is a problem with the file
        fmt = _magic_format(path) or "image"
        raise _bad(what, path, f"corrupt {fmt} header: {first_line(exc)}") from None


@contextmanager
def decoded(path: Path, what: str, limits: Limits) -> Iterator[Image.Image]:
    """Open ``path`` with PIL, check its header size (every page's), decode it once and yield
    the image.

    Raises:
        UserError: An :class:`~iqeclip.data.readers.errors.UnreadableFile`
            ``<what> <path>: <reason>`` for the first problem.
    """
    path = Path(path)
    with _opened(path, what, limits) as im:
        fmt = im.format or "image"
        try:
            width, height = (int(v) for v in im.size)
        except Exception as exc:
            raise _bad(what, path, f"corrupt {fmt} header: {first_line(exc)}") from None
        check_dims(what, path, width, height, limits)
        try:  # every page from its header, as the readers read them, before any is decoded
            image_header(path, limits)
        except UserError as exc:
            raise _bad(what, path, reason_about(exc, path)) from None
        try:
            im.load()
            ImageOps.exif_transpose(im, in_place=True)  # sizes as the readers see the image
        except Exception as exc:  # truncated data, broken chunks, decoder errors
            raise _bad(what, path, f"truncated or corrupt {fmt} data: {first_line(exc)}") from None
        yield im


def check_image_pixels(im: Image.Image, path: Path) -> None:
    """Make sure :func:`~iqeclip.data.readers.pil.load_image`'s conversion to RGB works."""
    if im.mode in _SAFE_MODES or im.mode in WIDE_MODES:
        return
    try:
        im.convert("RGB")
    except Exception as exc:
        raise _bad(
            "image", path, f"cannot convert {im.mode} pixels to RGB: {first_line(exc)}"
        ) from None


class ImageReader(FileReader):
    """PNG, JPEG, BMP and TIFF files through PIL (:mod:`~iqeclip.data.readers.pil`): one slice
    per page, the model's reference pre-processing for a whole file
    (:func:`~iqeclip.data.readers.model_input.reference`)."""

    name = "image"
    suffixes = IMAGE_SUFFIXES

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        return read_wide_image(path, reading.intensity, reading.limits)

    def declared(self, path: Path, reading: Reading) -> Declared:
        return image_header(path, reading.limits)

    def check(self, path: Path, limits: Limits) -> tuple[int, int]:
        """The PIL checks of the module docstring (not the slices: load_image reads it)."""
        with decoded(path, "image", limits) as im:
            check_image_pixels(im, path)
            width, height = im.size
        return width, height

    def single_image(self, path: Path) -> bool:
        return page_count(path) == 1

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        return masks / path.name if self.single_image(path) else None
