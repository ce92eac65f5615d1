"""DICOM's two readers: a file (:class:`DicomReader`) and a folder of files, read as its
series (:class:`SeriesReader`).

A file is DICOM by its name (``.dcm``, ``.dicom``) or, when no reader claims its name, by the
``DICM`` magic at byte 128 (scanners often write DICOM files without a suffix). A file found
while walking a folder belongs to its folder: the folder is one input, split by series. A folder
is read as the DICOM files directly inside it (hidden files and sub-folders are ignored), one
volume per patient, study, series, frame of reference and plane
(:func:`~iqeclip.data.readers.dicom_series.read_dicom_files`); under ``--on_bad_input skip`` its
unreadable files are left out one by one.
"""

from __future__ import annotations

from pathlib import Path

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.dicom import dicom_header, read_dicom
from iqeclip.data.readers.dicom_series import read_dicom_files, series_header
from iqeclip.data.readers.errors import cannot_read
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.data.readers.reader import FileReader
from iqeclip.data.readers.reading import Reading
from iqeclip.data.readers.registry import reader_for

__all__ = ["DICOM_SUFFIXES", "DicomReader", "SeriesReader", "read_dicom_series"]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
"""Names of DICOM files; a file without a known suffix is DICOM by its magic."""
_SERIES_LABELS = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".dcm")
"""The names a series folder's label volume may take in ``--masks``, after the folder's."""


class DicomReader(FileReader):
    """DICOM files (:func:`~iqeclip.data.readers.dicom.read_dicom`): one slice per frame."""

    name = "dicom"
    suffixes = DICOM_SUFFIXES

    def sniff(self, path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            with open(path, "rb") as handle:
                handle.seek(128)
                return handle.read(4) == b"DICM"
        except OSError:
            return False

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        return read_dicom(path, reading.intensity, reading.orientation, reading.limits)

    def declared(self, path: Path, reading: Reading) -> Declared:
        return dicom_header(path, reading.limits)

    def input_of(self, file: Path) -> Path:
        return file.parent


def _series_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(folder).iterdir()
        if not p.name.startswith(".") and isinstance(reader_for(p), DicomReader)
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
        raise cannot_read("DICOM series", folder, "no such folder")
    return read_dicom_files(folder, _series_files(folder), intensity, bad, orientation, limits)


class SeriesReader(FileReader):
    """A folder, read as the DICOM series it holds (:func:`read_dicom_series`); its label
    volume is named like the folder in the ``--masks`` folder (:meth:`mask_in`), and its results
    can go back as DICOM objects (``dicom_objects``)."""

    name = "series"
    partial = True
    dicom_objects = True

    def sniff(self, path: Path) -> bool:
        return path.is_dir()

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        return read_dicom_series(path, reading.intensity, bad, reading.orientation, reading.limits)

    def declared(self, path: Path, reading: Reading) -> Declared:
        return series_header(path, _series_files(path), reading.limits)

    def mask_in(self, path: Path, masks: Path) -> Path | None:
        """The label volume named like the folder: ``<folder>.nii.gz`` (or ``.nii``, a 3D
        Slicer ``.seg.nrrd``, ``.nrrd``, ``.mha``, a DICOM-SEG ``.dcm``), the first found."""
        named = [masks / f"{path.name}{suffix}" for suffix in _SERIES_LABELS]
        return next((m for m in named if m.is_file()), named[0])
