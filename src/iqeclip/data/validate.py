"""Checking input files before a run: the ``--on_bad_input {error,skip}`` policy.

:func:`check_sample` opens each file of a :class:`~iqeclip.data.sample.Sample` once, as its
reader checks it (:meth:`~iqeclip.data.readers.Reader.check`: a PIL image's header, then one full
decode; DICOM, NIfTI and other formats read as predict reads them) and rejects, with a one-line
reason:

- a missing or empty (0-byte) file, a truncated or corrupt PNG/JPEG, or a file with an image suffix
  whose content is not an image;
- an image smaller than 2 pixels on a side (``image is 1x1 pixels``) or larger than the
  sample's reading's :class:`~iqeclip.data.readers.limits.Limits` (from the header:
  ``image is W x H pixels, larger than the 50-megapixel limit``; PIL's own decompression-bomb
  warning/error is caught and reported the same way; the pages of a multi-page file, and the
  slices of a DICOM or NIfTI input, are checked by the readers before any is decoded);
- an abnormal image without a mask when the dataset has pixel masks (``masks_expected``);
- a mask whose size differs from its image's (the original sizes, before any resize);
- a mask that :func:`iqeclip.data.readers.load_mask` would not read as intended: more than two
  grey values, two values other than ``{0, x}``, or a largest value between 2 and 127
  (``load_mask`` only marks values >= 128, or any value > 0 of a 0/1 mask, as anomalous, so such
  a mask would come out empty). 0/1 and 0/255 masks (and ``{0, x}`` for any ``x >= 128``) are binary.
  JPEG masks are lossy, so their compression noise is tolerated: a JPEG mask is accepted when at
  least 99 % (:data:`JPEG_BINARY_FRACTION`) of its pixels lie within 32 grey levels
  (:data:`JPEG_TOLERANCE`) of 0 or of the mask's maximum. (Exactly 0 or the maximum is too strict:
  a 512 x 512 disc saved at JPEG quality 75 has only ~98.7 % such pixels.)

A slice of a volume or DICOM series (a sample with an ``index``, from a manifest) is checked as
the data loader reads it: the volume decoded once, the slice's size checked, its label volume
(NIfTI, NRRD, MetaImage, a 3D Slicer ``.seg.nrrd`` or a DICOM-SEG:
:func:`~iqeclip.data.readers.is_label_volume`) aligned to the volume
(:func:`~iqeclip.data.readers.label_slices`: exactly, or resampled onto its grid; one that
does not overlap the volume is refused).

DICOM and NIfTI images need their optional packages (a missing one stops the run, whatever the
policy); non-finite voxels are the reader's business (replaced and counted in the slice's
:class:`~iqeclip.data.readers.Levels`; an all-NaN slice reads as zeros), so they pass.

:func:`validate_samples` applies a policy to a list: ``"error"`` raises the first problem as a
:class:`~iqeclip.errors.UserError`, ``"skip"`` returns the good samples (in order) and a
:class:`Skipped` record for each other one, which :func:`write_skipped` saves as a CSV file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iqeclip.data.readers import (
    DEFAULT_READING,
    WIDE_MODES,
    ImageReader,
    MissingPackage,
    check_size,
    is_label_volume,
    label_slices,
    read_slices,
    reader_for,
    reason_about,
)
from iqeclip.data.readers.image import decoded
from iqeclip.data.readers.reader import check_dims
from iqeclip.data.sample import Sample
from iqeclip.errors import UserError, first_line, param
from iqeclip.runtime.files import atomic_write_text

__all__ = [
    "JPEG_BINARY_FRACTION",
    "JPEG_TOLERANCE",
    "POLICIES",
    "Skipped",
    "check_sample",
    "validate_samples",
    "write_skipped",
]

POLICIES: tuple[str, ...] = ("error", "skip")
"""The values of ``--on_bad_input``."""

JPEG_TOLERANCE = 32
"""Grey levels around 0 and the maximum that count as binary in a JPEG mask."""

JPEG_BINARY_FRACTION = 0.99
"""Share of a JPEG mask's pixels that must be near 0 or near its maximum."""


@dataclass(frozen=True)
class Skipped:
    """A sample left out under ``--on_bad_input skip``.

    Attributes:
        path: The sample's image file.
        reason: Why, on one line (a mask problem names the mask file).
    """

    path: Path
    reason: str


class _Bad(Exception):
    """A per-file problem: the file at fault, its role (``image`` / ``mask``) and the reason."""

    def __init__(self, what: str, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.what = what
        self.path = Path(path)
        self.reason = " ".join(reason.split())

    def message(self) -> str:
        return f"{self.what} {self.path}: {self.reason}"

    def skip_reason(self) -> str:
        return self.message() if self.what == "mask" else self.reason


@contextmanager
def _reasons(what: str, path: Path, missing_stops: bool = True) -> Iterator[None]:
    """A reader's error as the :class:`_Bad` ``what`` (``image``, ``mask``) ``path``; a missing
    optional package stops the run as it is (``missing_stops``: a label volume's is the
    mask's problem)."""
    try:
        yield
    except UserError as exc:
        if missing_stops and isinstance(exc, MissingPackage):
            raise
        raise _Bad(what, path, reason_about(exc, path)) from None


def _mask_grey(im: Image.Image, path: Path) -> np.ndarray:
    """The mask as :func:`iqeclip.data.readers.load_mask` sees it: mode ``L``, (H, W) uint8."""
    try:
        if im.mode in WIDE_MODES:
            values = np.asarray(im, dtype=np.float64)
            if values.max(initial=0.0) > 255:
                values = np.rint(np.clip(values, 0.0, 65535.0) / 257.0)
            return np.clip(values, 0, 255).astype(np.uint8)
        return np.asarray(im.convert("L"), dtype=np.uint8)
    except Exception as exc:
        raise _Bad(
            "mask", path, f"cannot convert {im.mode} pixels to grey: {first_line(exc)}"
        ) from None


def _check_binary(grey: np.ndarray, path: Path, lossy: bool) -> None:
    """Raise unless ``grey`` is a binary mask as described in the module docstring."""
    counts = np.bincount(grey.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    top = int(present[-1]) if present.size else 0
    if 1 < top < 128:
        raise _Bad(
            "mask",
            path,
            f"largest mask value is {top}: only values >= 128 (or 1 in a 0/1 mask) mark anomalies, "
            "so this mask would be empty; save masks as 0/1 or 0/255",
        )
    if present.size <= 2 and not lossy:
        if present.size == 2 and present[0] != 0:
            raise _Bad(
                "mask",
                path,
                f"mask values are {int(present[0])} and {top}, not 0 and one other value "
                "(expected 0/1 or 0/255)",
            )
        return
    if lossy:
        levels = np.arange(256)
        near = (levels <= JPEG_TOLERANCE) | (levels >= top - JPEG_TOLERANCE)
        share = float(counts[near].sum()) / max(grey.size, 1)
        if share >= JPEG_BINARY_FRACTION:
            return
        raise _Bad(
            "mask",
            path,
            f"JPEG mask is not binary: only {share:.1%} of its pixels are near 0 or {top} "
            f"(at least {JPEG_BINARY_FRACTION:.0%} needed)",
        )
    raise _Bad(
        "mask",
        path,
        f"mask is not binary: {present.size} distinct grey values (expected 0/1 or 0/255)",
    )


def _check_slice(sample: Sample, masks_expected: bool) -> None:
    """A slice of a volume or series: read as the data loader reads it (the decoded volume is
    kept for the next slices), its size checked, its label volume aligned."""
    image, reading = Path(sample.image), sample.reading or DEFAULT_READING
    with _reasons("image", image):
        slices = read_slices(image, reading)
    if not 0 <= sample.index < len(slices):
        raise _Bad("image", image, f"has no slice {sample.index} (it holds {len(slices)})")
    height, width = slices[sample.index].image.shape[:2]
    with _reasons("image", image):
        check_dims("image", image, int(width), int(height), reading.limits)
    if sample.mask is None:
        if masks_expected and sample.label == 1:
            raise _Bad("image", image, "abnormal slice has no mask (this dataset has pixel masks)")
        return
    mask = Path(sample.mask)
    if not is_label_volume(mask):
        raise _Bad(
            "mask", mask, f"the mask of slice {sample.index} of {image} must be a label volume"
        )
    with _reasons("mask", mask, missing_stops=False):
        label_slices(mask, image, reading)


def _check(sample: Sample, masks_expected: bool) -> None:
    """Raise :class:`_Bad` for the first problem of a sample."""
    if sample.index is not None:
        _check_slice(sample, masks_expected)
        return
    image = Path(sample.image)
    limits = (sample.reading or DEFAULT_READING).limits
    reader = reader_for(image) or ImageReader()  # no reader: PIL's reason says what it is
    with _reasons("image", image):
        width, height = reader.check(image, limits)
    if sample.mask is None:
        if masks_expected and sample.label == 1:
            raise _Bad("image", image, "abnormal image has no mask (this dataset has pixel masks)")
        return
    mask = Path(sample.mask)
    with _reasons("mask", mask), decoded(mask, "mask", limits) as im:
        if im.size != (width, height):
            raise _Bad(
                "mask",
                mask,
                f"mask is {im.size[0]}x{im.size[1]} pixels but its image {image} is "
                f"{width}x{height}",
            )
        lossy = im.format in ("JPEG", "MPO")
        grey = _mask_grey(im, mask)
    _check_binary(grey, mask, lossy)


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise UserError(
            f"{param('on_bad_input')} must be one of {', '.join(POLICIES)}, got {policy!r}"
        )


def check_sample(sample: Sample, size: int, masks_expected: bool = False) -> None:
    """Check that a sample's files can be read as the model needs them.

    Cheap: each file's header is read and its pixels decoded once; no resize, no model work.

    Args:
        sample: The image, its label and its mask (or None).
        size: The model's input side in pixels (checked to be a positive integer).
        masks_expected: The dataset has pixel masks, so an abnormal image (label 1) needs one.

    Raises:
        UserError: ``<image|mask> <path>: <reason>`` for the first problem found (see the
            module docstring), or a non-positive size.
    """
    check_size(size)
    try:
        _check(sample, masks_expected)
    except _Bad as bad:
        raise UserError(bad.message()) from None


def validate_samples(
    samples: Sequence[Sample], size: int, policy: str, masks_expected: bool = False
) -> tuple[list[Sample], list[Skipped]]:
    """Apply the ``--on_bad_input`` policy to a list of samples.

    Args:
        samples: The samples, in the order they will be used.
        size: The model's input side in pixels.
        policy: ``"error"``: stop at the first unusable sample; ``"skip"``: leave unusable
            samples out and report them.
        masks_expected: The dataset has pixel masks (see :func:`check_sample`).

    Returns:
        ``(good, skipped)``: the usable samples in their original order, and one
        :class:`Skipped` per left-out sample (always empty under ``"error"``).

    Raises:
        UserError: An unknown policy or a bad size; under ``"error"``, the first unusable
            sample (``<image|mask> <path>: <reason>``). ``"skip"`` never raises for a
            per-file problem.
    """
    _check_policy(policy)
    check_size(size)
    good: list[Sample] = []
    skipped: list[Skipped] = []
    for sample in samples:
        try:
            _check(sample, masks_expected)
        except _Bad as bad:
            if policy == "error":
                raise UserError(
                    f"{bad.message()} ({param('on_bad_input')} skip leaves such samples out)"
                ) from None
            skipped.append(Skipped(path=Path(sample.image), reason=bad.skip_reason()))
        else:
            good.append(sample)
    return good, skipped


def write_skipped(skipped: Sequence[Skipped], path: Path) -> None:
    """Write the skipped samples as a CSV file with the header ``path,reason`` (atomically).

    Args:
        skipped: The records from :func:`validate_samples`.
        path: The CSV file (UTF-8; fields quoted where needed). An empty list writes the header
            only.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "reason"])
    for item in skipped:
        writer.writerow([str(item.path), " ".join(item.reason.split())])
    atomic_write_text(Path(path), buffer.getvalue())
