"""Which reader a path needs: the one place that decides a file's type.

- a folder is a DICOM series folder: the DICOM files directly inside it (by the rules below;
  hidden files and sub-folders are ignored), read by :func:`read_dicom_series` as one series per
  SeriesInstanceUID;
- a name ending in ``.nii`` / ``.nii.gz`` is NIfTI (:mod:`iqeclip.data.readers.nifti`);
- ``.dcm`` / ``.dicom`` is DICOM (:mod:`iqeclip.data.readers.dicom`);
- ``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg`` and ``.bmp`` are PIL images
  (:mod:`iqeclip.data.readers.pil`);
- any other file is DICOM when it has the ``DICM`` magic at byte 128 (scanners often write DICOM
  files without a suffix), else it is not supported.

Suffixes are compared case-insensitively and are checked before the magic. :func:`kind` gives a
path's type and :func:`read` reads a path by it. Every volume's slices reach the model in one
view, whatever the format (:mod:`iqeclip.data.readers.orientation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.dicom import dicom_header, read_dicom
from iqeclip.data.readers.dicom_series import read_dicom_files, series_header
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.data.readers.nifti import nifti_header, read_nifti
from iqeclip.data.readers.pil import image_header, read_wide_image
from iqeclip.errors import UserError

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "Kind",
    "declared",
    "kind",
    "read",
    "read_dicom_series",
]

Kind = Literal["series", "nifti", "dicom", "image"]
"""A path's type as :func:`kind` gives it."""

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
"""Files :func:`read` reads with PIL (:func:`~iqeclip.data.readers.pil.read_wide_image`)."""


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def kind(path: Path) -> Kind | None:
    """A path's type, by the rules of the module docstring.

    Args:
        path: A file or folder.

    Returns:
        ``"series"`` for a folder (whatever it holds), ``"nifti"``, ``"dicom"`` or ``"image"``
        for a file; None for a missing path, something that is neither a file nor a folder, or
        an unsupported file.
    """
    path = Path(path)
    if path.is_dir():
        return "series"
    if not path.is_file():
        return None
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    return "dicom" if _has_dicm_magic(path) else None


def _series_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in Path(folder).iterdir() if not p.name.startswith(".") and kind(p) == "dicom"
    )


def read_dicom_series(
    folder: Path,
    intensity: Intensity = DEFAULT_INTENSITY,
    bad: list[tuple[Path, str]] | None = None,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read the DICOM files directly inside a folder, one series per SeriesInstanceUID.

    Files are DICOM by suffix (``.dcm``, ``.dicom``) or by the ``DICM`` magic; other files,
    hidden files and sub-folders are ignored, and DICOM files without pixel data (DICOMDIR,
    reports) and non-image DICOM (an RT dose grid) are skipped. Several series, patients or
    planes in one folder are kept apart (:func:`~iqeclip.data.readers.dicom_series.read_dicom_files`):
    the slices come volume by volume (SeriesNumber order), each ordered by ImagePositionPatient
    along the slice normal of its ImageOrientationPatient (oblique series too), falling back to
    InstanceNumber, then file name.

    Args:
        folder: The series folder.
        intensity: As for :func:`~iqeclip.data.readers.dicom.read_dicom`.
        bad: If a list, an unreadable file is left out and appended to it as ``(file, reason)``
            instead of failing the folder.
        orientation: As for :func:`~iqeclip.data.readers.dicom.read_dicom`.
        limits: As for :func:`~iqeclip.data.readers.dicom_series.read_dicom_files`.

    Returns:
        The slices, volume by volume, as
        :func:`~iqeclip.data.readers.dicom_series.read_dicom_files` describes them.

    Raises:
        UserError: pydicom missing, the folder missing or holding no readable DICOM image, or
            (without ``bad``) any DICOM file unreadable (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"cannot read DICOM series {folder}: no such folder")
    return read_dicom_files(folder, _series_files(folder), intensity, bad, orientation, limits)


def read(
    path: Path,
    axis: int = 2,
    intensity: Intensity = DEFAULT_INTENSITY,
    orientation: str = "radiological",
    bad: list[tuple[Path, str]] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read any supported input by its :func:`kind`.

    Args:
        path: File or series folder.
        axis: The plane NIfTI volumes are sliced across (0 sagittal, 1 coronal, 2 axial).
        intensity: Window / percentile options.
        orientation: How volume slices are turned
            (:data:`~iqeclip.data.readers.orientation.ORIENTATIONS`).
        bad: Series folders only: as for :func:`read_dicom_series` (unreadable files are
            listed there instead of failing the folder).
        limits: The largest input read (:mod:`~iqeclip.data.readers.limits`), checked from
            the headers before anything is decoded.

    Returns:
        The slices, as the specific reader returns them.

    Raises:
        UserError: A missing path, an unsupported file type, or the reader's errors (an
            :class:`~iqeclip.data.readers.limits.OverLimit` for an input over ``limits``).
    """
    path = _existing(path)
    found = kind(path)
    if found == "series":
        return read_dicom_series(path, intensity, bad, orientation, limits)
    if found == "nifti":
        return read_nifti(path, axis, intensity, orientation, limits)
    if found == "dicom":
        return read_dicom(path, intensity, orientation, limits)
    if found == "image":
        return read_wide_image(path, intensity, limits)
    raise _unsupported(path)


def declared(
    path: Path,
    axis: int = 2,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> Declared:
    """The slices :func:`read` would give for ``path`` and their pixels together, from the
    headers alone (nothing is decoded), checked against ``limits``.

    Args:
        path: File or series folder.
        axis: As for :func:`read`.
        orientation: As for :func:`read`.
        limits: The largest input accepted.

    Raises:
        UserError: As :func:`read` for what its headers say: a missing path, an unsupported or
            unreadable file, an :class:`~iqeclip.data.readers.limits.OverLimit`.
    """
    path = _existing(path)
    found = kind(path)
    if found == "series":
        return series_header(path, _series_files(path), limits)
    if found == "nifti":
        return nifti_header(path, axis, orientation, limits)
    if found == "dicom":
        return dicom_header(path, limits)
    if found == "image":
        return image_header(path, limits)
    raise _unsupported(path)


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"cannot read {path}: no such file or folder")
    return path


def _unsupported(path: Path) -> UserError:
    return UserError(
        f"cannot read {path}: unsupported file type (expected DICOM, NIfTI .nii/.nii.gz, "
        f"{'/'.join(IMAGE_SUFFIXES)} or a folder of DICOM files)"
    )
