"""A folder of DICOM files as volumes: grouped, ordered along the slice normal, with the
geometry of the grid ITK reads.

:func:`read_dicom_files` reads the files (:mod:`iqeclip.data.readers.dicom` converts each one),
keeps one volume per patient, study, series, frame of reference and plane, orders each along its
slice normal and gives it the :class:`~iqeclip.data.readers.base.Geometry` of
:func:`series_affine`. Which files of a folder are DICOM is decided by
:class:`~iqeclip.data.readers.dicom_readers.SeriesReader`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.base import Geometry, Slice
from iqeclip.data.readers.dicom import (
    _dataset_slices,
    _dcmread,
    _declared,
    _first_number,
    _has_pixels,
    _not_an_image,
    _numbers,
    _plane,
    _position,
    _pydicom,
    _view,
)
from iqeclip.data.readers.errors import cannot_read
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.errors import UserError

__all__ = ["SPACING_TOLERANCE_MM", "read_dicom_files", "series_affine", "series_header"]

logger = logging.getLogger(__name__)


def _normal(ds: Any) -> np.ndarray | None:
    """The slice normal (row x column direction of ImageOrientationPatient), or None."""
    cosines = _position(ds.get("ImageOrientationPatient"))
    if cosines is None or len(cosines) != 6:
        return None
    normal = np.cross(np.asarray(cosines[:3]), np.asarray(cosines[3:]))
    length = float(np.linalg.norm(normal))
    return normal / length if length > 0 and math.isfinite(length) else None


def _sorted_series(items: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
    """One series' files in slice order.

    By ImagePositionPatient projected on the slice normal (from the first file with a usable
    ImageOrientationPatient; the z axis when none has one) when every file has a position, then
    InstanceNumber, then name; else by InstanceNumber, then name (missing values last).
    """
    normal = next((n for n in (_normal(ds) for _, ds in items) if n is not None), None)
    normal = np.array([0.0, 0.0, 1.0]) if normal is None else normal
    positions = [_position(ds.get("ImagePositionPatient")) for _, ds in items]
    by_position = all(p is not None and len(p) == 3 for p in positions)

    def key(pair: tuple[tuple[Path, Any], tuple[float, ...] | None]) -> tuple[Any, ...]:
        (path, ds), position = pair
        along = round(float(np.dot(position, normal)), 4) if by_position else 0.0
        instance = _first_number(ds.get("InstanceNumber"))
        return (along, instance is None, instance or 0.0, path.name)

    return [item for item, _ in sorted(zip(items, positions, strict=True), key=key)]


def _refuse_repeated_positions(folder: Path, files: list[tuple[Path, Any]]) -> None:
    """Refuse a volume two of whose single-frame files lie at the same ImagePositionPatient:
    two acquisitions under one set of UIDs (echoes, time points, a scan repeated after
    anonymisation) would otherwise be interleaved into one volume.

    Raises:
        UserError: Naming the folder, the series and two of the files.
    """
    seen: dict[tuple[float, ...], Path] = {}
    for path, ds in files:
        if int(_first_number(ds.get("NumberOfFrames")) or 1) > 1:
            continue
        position = _position(ds.get("ImagePositionPatient"))
        if position is None or len(position) != 3:
            continue
        key = tuple(round(v, 3) for v in position)
        if key in seen:
            uid = str(ds.get("SeriesInstanceUID", "")) or "(no UID)"
            raise cannot_read(
                "DICOM series",
                folder,
                f"{seen[key].name} and {path.name} of series {uid} lie at the same position "
                f"({', '.join(f'{v:g}' for v in key)} mm): two acquisitions (echoes, time "
                "points, a repeated scan) cannot be one volume; put each in a folder of its own",
            )
        seen[key] = path


SPACING_TOLERANCE_MM = 0.01
"""How far consecutive slice steps of a series may differ for it to get one affine."""


def series_affine(datasets: Sequence[Any]) -> np.ndarray | None:
    """The RAS affine of a series on the grid ITK and dcm2niix read: ``(columns, rows, slices)``.

    Voxel ``(i, j, k)`` is column ``i``, row ``j`` of the ``k``-th slice in reading order (by
    position along the slice normal): the in-plane axes from the first slice's
    ImageOrientationPatient and PixelSpacing, the origin its ImagePositionPatient, the slice axis
    the step between consecutive ImagePositionPatient (the slice normal times SpacingBetweenSlices
    or SliceThickness, else 1 mm, for a single slice). A series whose steps differ by more than
    :data:`SPACING_TOLERANCE_MM` (uneven spacing, a missing slice) gets None, since no single
    affine describes it. DICOM's patient space is LPS, NIfTI's world RAS: the first two world
    axes are negated.

    Args:
        datasets: The series' single-frame datasets in slice order.

    Returns:
        The (4, 4) affine, or None when a dataset is multi-frame or the geometry is missing or
        degenerate (then no world position is claimed for the series).
    """
    if not datasets or any(
        int(_first_number(ds.get("NumberOfFrames")) or 1) > 1 for ds in datasets
    ):
        return None
    planes = [_plane(ds, 0) for ds in datasets]
    first = planes[0]
    if first is None or any(p is None for p in planes):
        return None
    if len(datasets) > 1:
        origins = np.stack([p.origin for p in planes if p is not None])
        steps = np.diff(origins, axis=0)
        step = steps.mean(axis=0)
        if np.abs(steps - step).max() > SPACING_TOLERANCE_MM:  # uneven, or a slice missing
            return None
    else:
        ds = datasets[0]
        thickness = _first_number(ds.get("SpacingBetweenSlices")) or _first_number(
            ds.get("SliceThickness")
        )
        step = first.normal * (thickness if thickness and thickness > 0 else 1.0)
    affine = first.affine(step)
    if not np.isfinite(affine).all() or abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
        return None
    return affine


def _volume_key(ds: Any) -> tuple[str, ...]:
    """What one volume shares: patient, study, series, frame of reference and the slice plane
    (ImageOrientationPatient to 1e-3, so a localizer's three planes are three volumes)."""
    iop = _numbers(ds.get("ImageOrientationPatient"), 6)
    return (
        str(ds.get("PatientID", "")),
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("FrameOfReferenceUID", "")),
        "" if iop is None else ",".join(f"{v:.3f}" for v in np.round(iop, 3) + 0.0),
    )


def _series_order(group: list[tuple[Path, Any]]) -> tuple[Any, ...]:
    ds = group[0][1]
    number = _first_number(ds.get("SeriesNumber"))
    return (number is None, number or 0.0, _volume_key(ds))


def _splits(folder: Path, keys: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each group's volume id: its SeriesInstanceUID, with ``#2``, ``#3``... where files sharing
    one SeriesInstanceUID disagree on patient, study, frame of reference or plane (logged)."""
    ids: dict[tuple[str, ...], str] = {}
    by_series: dict[str, list[tuple[str, ...]]] = {}
    for key in keys:
        by_series.setdefault(key[2], []).append(key)
    for uid, parts in by_series.items():
        for n, key in enumerate(parts, 1):
            ids[key] = uid if n == 1 else f"{uid}#{n}"
        if len(parts) > 1:
            fields = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
            differ = [
                name
                for i, name in enumerate((*fields, "ImageOrientationPatient"))
                if len({p[i] for p in parts}) > 1
            ]
            logger.warning(
                f"warning: DICOM folder {folder}: the files of series {uid or '(no UID)'} differ "
                f"in {', '.join(differ)}; read as {len(parts)} separate volumes"
            )
    return ids


def _total(folder: Path, declared: Sequence[Declared], limits: Limits) -> Declared:
    """A folder's frames and pixels together, checked against ``limits``."""
    total = Declared(sum(d.slices for d in declared), sum(d.pixels for d in declared))
    limits.check_input(f"cannot read DICOM series {folder}", *total, "frames", folder)
    return total


def _count_files(folder: Path, files: Sequence[Path], limits: Limits) -> None:
    """Refuse a folder of more files than ``limits`` takes slices, before any is read."""
    where = f"cannot read DICOM series {folder}"
    limits.check_input(where, len(files), 0, "DICOM files", folder)


def series_header(folder: Path, files: Sequence[Path], limits: Limits = DEFAULT_LIMITS) -> Declared:
    """The frames of a folder's DICOM files and their pixels, from their headers (nothing
    decoded), checked against ``limits``: the number of files first, then each file, then the
    folder's frames and pixels together.

    Raises:
        UserError: pydicom missing, an unreadable file, or an
            :class:`~iqeclip.data.readers.limits.OverLimit` naming the limit.
    """
    pydicom, _ = _pydicom(folder)
    _count_files(folder, files, limits)
    declared = [
        _declared(_dcmread(pydicom, path, limits, header=True), Path(path), limits)
        for path in files
    ]
    return _total(folder, declared, limits)


def read_dicom_files(
    folder: Path,
    files: Sequence[Path],
    intensity: Intensity = DEFAULT_INTENSITY,
    bad: list[tuple[Path, str]] | None = None,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read the DICOM files of a folder, one volume per patient, study, series, frame of
    reference and slice plane.

    This is the reading half of :func:`iqeclip.data.readers.registry.read_dicom_series`, which
    finds the folder's DICOM files. Files without pixel data (DICOMDIR, reports) and files that
    are not images (an RT dose grid, a segmentation: see :func:`_not_an_image`) are left out
    (counted in a log line). Files are grouped by :func:`_volume_key`: two patients sharing one
    SeriesInstanceUID (it happens after anonymisation), or a localizer's three planes, are kept
    apart (a warning says which). The volumes come in SeriesNumber order, and within one the
    files are ordered by ImagePositionPatient along the slice normal (see
    :func:`_sorted_series`), else by InstanceNumber, then name.

    Args:
        folder: The series folder.
        files: Its DICOM files.
        intensity: As for :func:`read_dicom`.
        bad: If a list, an unreadable or undecodable file is left out and appended to it as
            ``(file, one-line reason)``; if None (default) it raises.
        orientation: As for :func:`read_dicom`.
        limits: The largest folder read: its number of files, then each file's frames (as
            :func:`read_dicom`), then the frames and pixels of its images together, checked
            before any pixel data is decoded.

    Returns:
        The slices, volume by volume; ``index`` runs 0..N-1 within each volume (the slice axis
        of the grid :func:`series_affine` describes), ``source`` is each slice's file,
        ``dicom.series`` the folder, ``dicom.volume_id`` the volume (the SeriesInstanceUID,
        ``#2``... for the parts of a split one), and ``geometry`` the volume's (None for a
        volume with a multi-frame file, slices of several sizes or without usable geometry).

    Raises:
        UserError: pydicom missing, no files or no readable DICOM image among them, a folder
            over ``limits`` (:class:`~iqeclip.data.readers.limits.OverLimit`), or (without
            ``bad``) any DICOM file unreadable or over ``limits`` (named).
    """
    pydicom, _ = _pydicom(folder)
    if not files:
        raise cannot_read("DICOM series", folder, "no DICOM files in it")
    _count_files(folder, files, limits)
    groups = _image_files(pydicom, folder, files, bad, limits)
    ordered = sorted(groups.values(), key=_series_order)
    ids = _splits(folder, [_volume_key(g[0][1]) for g in ordered])
    out: list[Slice] = []
    for group in ordered:
        volume_id = ids[_volume_key(group[0][1])]
        out += _volume(folder, group, volume_id, intensity, orientation, limits, bad)
    if not out:
        raise cannot_read("DICOM series", folder, "none of its DICOM files is an image")
    return out


def _image_files(
    pydicom: Any,
    folder: Path,
    files: Sequence[Path],
    bad: list[tuple[Path, str]] | None,
    limits: Limits,
) -> dict[tuple[str, ...], list[tuple[Path, Any]]]:
    """The folder's image files and their datasets (pixel data not decoded), grouped by
    :func:`_volume_key`, once their frames and pixels together passed ``limits``; files without
    pixel data are left out, and so are non-image ones (counted in a log line)."""
    groups: dict[tuple[str, ...], list[tuple[Path, Any]]] = {}
    not_images: list[str] = []
    declared: list[Declared] = []
    for path in files:
        try:
            ds = _dcmread(pydicom, path, limits)
            if not _has_pixels(ds):
                continue
            refused = _not_an_image(ds)
            size = None if refused is not None else _declared(ds, Path(path), limits)
        except UserError as exc:
            if bad is None:
                raise
            bad.append((Path(path), str(exc)))
            continue
        if size is None:
            not_images.append(f"{Path(path).name} ({refused.removeprefix('not an image: ')})")
            continue
        declared.append(size)
        groups.setdefault(_volume_key(ds), []).append((Path(path), ds))
    if not_images:
        logger.info(
            f"DICOM folder {folder}: left out {len(not_images)} files that are not images: "
            f"{'; '.join(not_images[:3])}{' ...' if len(not_images) > 3 else ''}"
        )
    _total(folder, declared, limits)  # before any pixel data is decoded
    return groups


def _volume(
    folder: Path,
    group: list[tuple[Path, Any]],
    volume_id: str,
    intensity: Intensity,
    orientation: str,
    limits: Limits,
    bad: list[tuple[Path, str]] | None,
) -> list[Slice]:
    """One volume's slices in order, numbered, with its identity and (when one affine
    describes it) its :class:`~iqeclip.data.readers.base.Geometry`."""
    series: list[Slice] = []
    decoded: list[Any] = []
    ordered_files = _sorted_series(group)
    _refuse_repeated_positions(folder, ordered_files)
    for path, ds in ordered_files:
        try:
            slices = _dataset_slices(ds, path, intensity, orientation, limits)
        except UserError as exc:
            if bad is None:
                raise
            bad.append((path, str(exc)))
            continue
        decoded.append(ds)
        series += slices
    affine = series_affine(decoded) if len(series) == len(decoded) else None
    shapes = {s.image.shape for s in series}
    geometry = None
    if affine is not None and len(shapes) == 1 and all(s.image.ndim == 2 for s in series):
        grid = (int(decoded[0].Columns), int(decoded[0].Rows), len(series))
        view = _view(_plane(decoded[0], 0), orientation, series[0].source)
        geometry = Geometry(grid, affine, view, orientation, grid)
    for index, s in enumerate(series):
        s.index = index
        s.geometry = geometry
        if s.dicom is not None:
            s.dicom = replace(s.dicom, series=folder, volume_id=volume_id)
    return series
