"""Deflated DICOM files (Deflated Explicit VR Little Endian), read from their start.

pydicom inflates the whole dataset of such a file as soon as it reads it, even to read its header
(``stop_before_pixels``): a 400 KB file of 20000 x 20000 zeros takes 400 MB before anything can
be checked. :func:`deflated_header` inflates only as far as the image elements (group 0028),
lets the caller check them, then inflates the whole once more without keeping it, to bound what
pydicom will inflate.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from iqeclip.errors import UserError

__all__ = ["INFLATED_HEADER_BYTES", "deflated_header"]

INFLATED_HEADER_BYTES = 16 * 2**20
"""How far a deflated file's dataset is inflated to find its image size (its elements up to
group 0028), and how much more than its pixel data the whole dataset may inflate to."""


class _Inflating:
    """A deflated stream read as a file, inflated only as far as it is read (at most ``cap``
    bytes are kept): what pydicom needs to read the start of a deflated dataset."""

    def __init__(self, raw: BinaryIO, cap: int) -> None:
        self._raw, self._cap = raw, cap
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._data = bytearray()
        self._pos = 0

    def _more(self, limit: int) -> bytes:
        """Up to ``limit`` more inflated bytes (b"" at the end of the stream)."""
        while not self._inflater.eof:
            chunk = self._inflater.unconsumed_tail or self._raw.read(2**16)
            if not chunk:
                break
            out = self._inflater.decompress(chunk, limit)
            if out:
                return out
        return b""

    def read(self, size: int = -1) -> bytes:
        end = self._pos + size if size >= 0 else self._cap + 1
        while len(self._data) < end:
            if len(self._data) >= self._cap:
                raise UserError(f"its header inflates to more than {self._cap / 1e6:.0f} MB")
            more = self._more(
                min(max(end - len(self._data), 2**16), self._cap + 1 - len(self._data))
            )
            if not more:
                break
            self._data += more
        out = bytes(self._data[self._pos : end])
        self._pos += len(out)
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence not in (0, 1):
            raise OSError("a deflated dataset is read from its start")
        self._pos = max(0, offset + (self._pos if whence == 1 else 0))
        return self._pos

    def rest(self, limit: int) -> int:
        """Inflate the rest of the stream without keeping it: its size, or ``limit + 1`` once
        it is over ``limit``."""
        size = len(self._data)
        while size <= limit:
            more = self._more(2**20)
            if not more:
                break
            size += len(more)
        return size


def _past_group_0028(tag: Any, vr: str | None, length: int) -> bool:
    return tag.group > 0x0028


def deflated_header(
    pydicom: ModuleType, path: Path, pixel_bytes: Callable[[Any], int]
) -> Any | None:
    """The image elements (up to group 0028) of a Deflated Explicit VR Little Endian file, read
    before pydicom inflates its whole dataset; None for a file of any other transfer syntax.

    ``pixel_bytes`` checks those elements (raising a :class:`UserError` for a file over the
    limits) and gives the bytes the pixel data takes; the whole dataset, inflated once more
    without being kept, may be no larger than that and :data:`INFLATED_HEADER_BYTES` together
    (a padding element can hold gigabytes of zeros).
    """
    filereader = importlib.import_module("pydicom.filereader")
    where = f"cannot read DICOM {path}"
    with open(path, "rb") as raw:
        try:  # the file meta information, as pydicom reads it (with or without the preamble)
            filereader.read_preamble(raw, True)
            meta = filereader._read_file_meta_info(raw)
        except Exception:  # no meta to say it is deflated: pydicom's reading names the problem
            return None
        if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return None
        stream = _Inflating(raw, INFLATED_HEADER_BYTES)
        try:
            ds = filereader.read_dataset(stream, False, True, stop_when=_past_group_0028)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        limit = pixel_bytes(ds) + INFLATED_HEADER_BYTES
        if stream.rest(limit) > limit:
            raise UserError(
                f"{where}: its deflated dataset inflates to more than its pixel data needs "
                f"({limit / 1e6:.0f} MB)"
            )
    return ds
