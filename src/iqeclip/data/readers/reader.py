"""What a reader is: the :class:`Reader` protocol every format implements, and
:class:`FileReader`, a base class with the answers most formats give.

A reader claims paths by suffix (``suffixes``) or by content (:meth:`~Reader.sniff`), reads one
as a list of :class:`~iqeclip.data.readers.base.Slice` (:meth:`~Reader.read`) and answers what
callers would otherwise decide from the format: what its headers declare, how a file is checked
before a run, whether it is one 2-D picture, where its mask lies, which input a file found in a
walked folder belongs to. :func:`~iqeclip.data.readers.registry.register` adds one to the list
:func:`~iqeclip.data.readers.registry.reader_for` asks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import UnreadableFile
from iqeclip.data.readers.limits import Declared, Limits
from iqeclip.data.readers.reading import Reading

__all__ = ["MIN_SIDE", "FileReader", "Reader", "check_dims"]

MIN_SIDE = 2
"""Smallest accepted width and height in pixels."""


class Reader(Protocol):
    """A file format: how its files are recognised, read and checked.

    Attributes:
        name: The format in messages (``a 2-D <name>``): ``image``, ``dicom``, ``series``,
            ``nifti``...
        suffixes: Lower-case name endings it claims (``.nii.gz``); checked before any sniffing.
        partial: Its inputs are folders whose unreadable files are left out one by one under
            ``--on_bad_input skip`` (:meth:`read` lists them in ``bad``) instead of refusing the
            whole input.
        dicom_objects: Its inputs are DICOM series whose results can go back as DICOM objects
            that reference their instances (``predict --outputs dicom-seg,dicom-pmap``).
    """

    name: str
    suffixes: tuple[str, ...]
    partial: bool
    dicom_objects: bool

    def sniff(self, path: Path) -> bool:
        """Whether it reads ``path``, a folder or a file no reader claims by suffix."""
        ...

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        """The slices of ``path`` under ``reading`` (``bad``: see :attr:`partial`).

        Raises:
            UserError: An :class:`~iqeclip.data.readers.errors.UnreadableFile` for a file it
                cannot read or one over ``reading.limits``.
        """
        ...

    def declared(self, path: Path, reading: Reading) -> Declared:
        """The slices :meth:`read` would give and their pixels, checked against the limits."""
        ...

    def check(self, path: Path, limits: Limits) -> tuple[int, int]:
        """Check that ``path`` reads as the model needs it (before a run); its first slice's
        ``(width, height)``."""
        ...

    def single_image(self, path: Path) -> bool:
        """Whether ``path`` is known before reading to be one 2-D picture (it takes an image
        mask and writes no names below its output stem)."""
        ...

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        """Its ground truth in the ``--masks`` folder, or None when it cannot have one."""
        ...

    def input_of(self, file: Path) -> Path:
        """The input a file found in a walked folder belongs to (itself, or its folder)."""
        ...


def check_dims(what: str, path: Path, width: int, height: int, limits: Limits) -> None:
    """Refuse a ``what`` (``image``, ``mask``) smaller than :data:`MIN_SIDE` or over
    ``limits``: an :class:`~iqeclip.data.readers.errors.UnreadableFile` ``<what> <path>: <why>``."""
    reason = f"{what} is {width}x{height} pixels (at least 2x2 are needed)"
    if width >= MIN_SIDE and height >= MIN_SIDE:
        reason = limits.slice_problem(width, height, what)
    if reason is not None:
        raise UnreadableFile(f"{what} {path}: {reason}", path, reason)


class FileReader:
    """The answers most formats give: files of one picture or more, read whole to be checked
    and counted. A format subclasses it, sets ``name`` and ``suffixes`` (or :meth:`sniff`) and
    writes :meth:`read`; it overrides :meth:`declared` to answer from its headers."""

    name = "file"
    suffixes: tuple[str, ...] = ()
    partial = False
    dicom_objects = False

    def sniff(self, path: Path) -> bool:
        return False

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        raise NotImplementedError(f"{type(self).__name__} reads nothing")

    def declared(self, path: Path, reading: Reading) -> Declared:
        """Read the file and count (a format whose headers say it overrides this)."""
        slices = self.read(path, reading)
        pixels = sum(s.image.shape[0] * s.image.shape[1] for s in slices)
        where = f"cannot read {self.name} {path}"
        reading.limits.check_input(where, len(slices), pixels, path=path)
        return Declared(len(slices), pixels)

    def check(self, path: Path, limits: Limits) -> tuple[int, int]:
        """Read the file as predict reads it and check every slice's size."""
        slices = self.read(path, Reading(limits=limits))  # the readers check the headers first
        if not slices:
            raise UnreadableFile(f"image {path}: holds no image", path, "holds no image")
        for s in slices:
            height, width = s.image.shape[:2]
            check_dims("image", path, int(width), int(height), limits)
        height, width = slices[0].image.shape[:2]
        return int(width), int(height)

    def single_image(self, path: Path) -> bool:
        return False

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        return None

    def input_of(self, file: Path) -> Path:
        return file
