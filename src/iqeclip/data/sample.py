"""One labelled input of a run (:class:`Sample`): an image or a slice, its label and its mask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from iqeclip.data.readers import Reading

__all__ = ["Sample"]


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    Attributes:
        image: Path of the image file (from a manifest: any readable input, e.g. a NIfTI volume
            or a DICOM series folder).
        label: 0 for a normal (``good``) image, 1 for an abnormal (``Ungood``) one.
        mask: Path of the pixel mask (an image, or a label volume for a slice of a volume); None
            for normal images and for image-only datasets.
        index: The slice: its position in the list of slices that
            :func:`~iqeclip.data.readers.read` gives for ``image``; None for a 2-D image.
        reading: How the image is read (intensity rule, axis, orientation); None: the defaults.
    """

    image: Path
    label: int
    mask: Path | None
    index: int | None = None
    reading: Reading | None = None
