"""How large an input may be, checked from its header before any pixel is decoded.

A decompression bomb is a small file that declares a huge picture: a 97-byte NIfTI of
60000 x 60000 voxels, a deflated DICOM of 20000 x 20000, a TIFF of 120 large pages. Decoding one
takes gigabytes, so every reader reads what the header declares and checks it against the
:class:`Limits` of the run before it decodes anything:

- ``megapixels``: the pixels of one slice (an image, a TIFF page, a DICOM frame, a volume's slice),
  width x height;
- ``slices``: the slices of one input (the pages of a TIFF, the frames of a DICOM file, the files
  of a DICOM series folder, the slices of a NIfTI volume across the slicing plane);
- ``total_megapixels``: the pixels of all the slices of one input together.

``predict`` and ``serve`` take them as options (``--max_megapixels``, ``--max_slices``,
``--max_total_megapixels``; their messages name the option that raises the limit); training and
testing check their images against :data:`DEFAULT_LIMITS`. A limit that is exceeded is an
:class:`OverLimit`, a :class:`~iqeclip.errors.UserError` of one line naming the file, what it
declares and the limit (an :class:`~iqeclip.data.readers.errors.UnreadableFile`, so a reader's one
keeps the file and the reason apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from iqeclip.data.readers.errors import UnreadableFile

__all__ = ["DEFAULT_LIMITS", "Declared", "Limits", "OverLimit"]


class OverLimit(UnreadableFile):
    """An input (or upload) larger than a limit: one line naming it, the size and the limit."""


class Declared(NamedTuple):
    """What an input's header declares: its slices and the pixels of all of them together."""

    slices: int
    pixels: int


@dataclass(frozen=True)
class Limits:
    """The largest input a run reads (see the module docstring).

    Attributes:
        megapixels: Pixels of one slice, in millions (at most 89: Pillow's own
            decompression-bomb warning starts above that).
        slices: Slices of one input.
        total_megapixels: Pixels of all the slices of one input together, in millions.
        options: The limits are options of the command (``predict``, ``serve``): the messages
            name the option that raises each one.
    """

    megapixels: float = 50.0
    slices: int = 2000
    total_megapixels: float = 500.0
    options: bool = False

    def hint(self, option: str) -> str:
        """`` (--<option> raises it)`` when the limits are the command's options, else ``""``."""
        return f" (--{option} raises it)" if self.options else ""

    def slice_problem(self, width: int, height: int, what: str = "image") -> str | None:
        """Why a slice of ``width`` x ``height`` pixels is refused, or None."""
        if width * height <= self.megapixels * 1e6:
            return None
        return (
            f"{what} is {width} x {height} pixels, larger than the {self.megapixels:g}-megapixel "
            f"limit{self.hint('max_megapixels')}"
        )

    def input_problem(self, slices: int, pixels: int, unit: str = "slices") -> str | None:
        """Why an input of ``slices`` slices (``unit``: pages, frames, files...) holding
        ``pixels`` pixels in all is refused, or None."""
        if slices > self.slices:
            return (
                f"it holds {slices} {unit}, more than the limit of {self.slices}"
                f"{self.hint('max_slices')}"
            )
        if pixels > self.total_megapixels * 1e6:
            return (
                f"its {slices} {unit} hold {pixels / 1e6:.1f} megapixels, more than the limit "
                f"of {self.total_megapixels:g} megapixels in one input"
                f"{self.hint('max_total_megapixels')}"
            )
        return None

    def check_slice(
        self, where: str, width: int, height: int, what: str = "image", path: Path | None = None
    ) -> None:
        """Raise :class:`OverLimit` (``<where>: <why>``, about ``path``) for a slice over the
        limit."""
        problem = self.slice_problem(int(width), int(height), what)
        if problem is not None:
            raise OverLimit(f"{where}: {problem}", path, problem)

    def check_input(
        self, where: str, slices: int, pixels: int, unit: str = "slices", path: Path | None = None
    ) -> None:
        """Raise :class:`OverLimit` (``<where>: <why>``, about ``path``) for an input over a
        limit."""
        problem = self.input_problem(int(slices), int(pixels), unit)
        if problem is not None:
            raise OverLimit(f"{where}: {problem}", path, problem)


DEFAULT_LIMITS = Limits()
"""The limits of training and testing, and the defaults of ``predict`` and ``serve``."""
