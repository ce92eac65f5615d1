"""DICOM files (one slice per frame) and the reading of a DICOM series.

Pixel values are first passed through the modality transform (Modality LUT Sequence or Rescale
Slope/Intercept, per frame for enhanced files), so windows are in output units (HU for CT). The
default intensity rule is the file's own VOI transform (Window Center/Width, else VOI LUT
Sequence, else min-max; see :mod:`iqeclip.data.readers.intensity`). MONOCHROME1 images are
inverted after windowing (``1 - x``). Colour images (RGB, YBR, PALETTE COLOR) are min-max
normalised jointly over their three channels (or percentile-clipped); windows do not apply.

pydicom (the optional extra) is imported only when a DICOM file is read. Compressed transfer
syntaxes (RLE, JPEG, JPEG-LS, JPEG 2000) are decoded by pydicom's pixel-data plugins, which the
same extra installs (pylibjpeg with its openjpeg and rle plugins, pyjpegls, python-gdcm; Pillow
is a core dependency); which syntax needs which is tabled in ``docs/workflows.md``. pydicom
returns colour as RGB whatever the compressed colour space (YBR_FULL, YBR_FULL_422, YBR_RCT,
YBR_ICT) or planar configuration. Which files are DICOM is decided by
:mod:`iqeclip.data.readers.registry`.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from iqeclip.data.readers.base import INSTALL_HINT, Slice, need
from iqeclip.data.readers.intensity import (
    DEFAULT_INTENSITY,
    Default,
    Intensity,
    linear_window,
    normalise,
    sigmoid_window,
)
from iqeclip.errors import UserError, first_line

__all__ = ["read_dicom", "read_dicom_files", "series_affine"]


def _pydicom(path: Path) -> tuple[ModuleType, ModuleType]:
    """pydicom and its pixel-processing module (``pydicom.pixels``; 2.x: the handlers' util)."""
    pydicom = need("pydicom", path)
    for name in ("pydicom.pixels", "pydicom.pixel_data_handlers.util"):
        try:
            processing = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(processing, "apply_modality_lut"):
            return pydicom, processing
    raise UserError(f"reading {path} needs pydicom >= 2.4: {INSTALL_HINT}")


def _dcmread(pydicom: ModuleType, path: Path) -> Any:
    """Read a DICOM dataset; a file without preamble is read with ``force=True``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot read DICOM {path}: is a folder (read it as a series)")
    if not path.is_file():
        raise UserError(f"cannot read DICOM {path}: no such file")
    errors = importlib.import_module("pydicom.errors")
    try:
        try:
            return pydicom.dcmread(path)
        except errors.InvalidDicomError:
            return pydicom.dcmread(path, force=True)
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise UserError(f"cannot read DICOM {path}: {first_line(exc)}") from None


def _has_pixels(ds: Any) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _first_number(value: Any) -> float | None:
    """The first value of a possibly multi-valued DICOM number, or None."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes, int, float)):
        try:
            value = next(iter(value))
        except (TypeError, StopIteration):
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _functional_item(ds: Any, frame: int, sequence: str) -> Any:
    """The first item of a functional-group macro for one frame (per-frame, then shared)."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        group = per_frame[frame]
        if group.get(sequence):
            return group[sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        group = shared[0]
        if group.get(sequence):
            return group[sequence][0]
    return None


def _rescale(
    ds: Any, processing: ModuleType, raw: np.ndarray, frame: int, path: Path
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Modality transform of one frame; returns (values, (slope, intercept) or None)."""
    item = _functional_item(ds, frame, "PixelValueTransformationSequence")
    if item is not None:
        slope = _first_number(item.get("RescaleSlope"))
        intercept = _first_number(item.get("RescaleIntercept"))
        if slope is not None and intercept is not None:
            return raw.astype(np.float64) * slope + intercept, (slope, intercept)
    try:
        values = processing.apply_modality_lut(raw, ds)
    except Exception as exc:
        raise UserError(f"cannot read DICOM {path}: modality LUT: {first_line(exc)}") from None
    slope = _first_number(ds.get("RescaleSlope"))
    intercept = _first_number(ds.get("RescaleIntercept"))
    has_rescale = slope is not None and intercept is not None and not ds.get("ModalityLUTSequence")
    return values, ((slope, intercept) if has_rescale else None)


def _file_default(ds: Any, processing: ModuleType, frame: int) -> tuple[Default | None, Any]:
    """The file's own VOI transform for one frame: (default rule, window) or (None, None)."""
    item = _functional_item(ds, frame, "FrameVOILUTSequence")
    for source in (item, ds):
        if source is None:
            continue
        centre = _first_number(source.get("WindowCenter"))
        width = _first_number(source.get("WindowWidth"))
        if centre is not None and width is not None and width > 0:
            sigmoid = str(source.get("VOILUTFunction", "")).strip().upper() == "SIGMOID"
            mapping = sigmoid_window if sigmoid else linear_window
            return ("file-window", partial(mapping, centre=centre, width=width)), (centre, width)
    if ds.get("VOILUTSequence"):
        try:
            descriptor = [int(v) for v in ds.VOILUTSequence[0].LUTDescriptor]
            entries, first = descriptor[0] or 2**16, descriptor[1]
            table = np.asarray(
                processing.apply_voi(np.arange(first, first + entries, dtype=np.int64), ds, 0),
                dtype=np.float64,
            )
        except Exception:  # an unusable LUT falls back to min-max
            return None, None
        t_lo, t_hi = float(table.min()), float(table.max())
        if not t_hi > t_lo:
            return None, None

        def voi_lut(x: np.ndarray) -> np.ndarray:
            index = np.clip(np.rint(x), first, first + entries - 1).astype(np.int64) - first
            return (table[index] - t_lo) / (t_hi - t_lo)

        return ("voi-lut", voi_lut), None
    return None, None


def _decode_failure(ds: Any, exc: BaseException) -> str:
    """Why the pixel data did not decode, on one line.

    pydicom lists each decoder plugin's failure (or missing packages) on the lines after a
    first line ending in ``:``; they are kept, joined by ``;``. A compressed transfer syntax is
    named (name and UID), with the install hint when pydicom says its decoders are missing.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = first_line(exc)
    if len(lines) > 1 and lines[0].endswith(":"):
        reason = f"{lines[0]} {'; '.join(lines[1:])}"
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        compressed = bool(syntax is not None and syntax.is_compressed)
    except Exception:  # not a transfer syntax pydicom knows (a private or garbage UID)
        compressed = False
    if not compressed:
        return reason
    reason = f"{reason} (transfer syntax {syntax.name}, {syntax})"
    if "missing dependencies" in reason:
        reason += f"; the decoders come with {INSTALL_HINT}"
    return reason


def _dataset_slices(ds: Any, path: Path, intensity: Intensity) -> list[Slice]:
    """Convert a read dataset into one :class:`Slice` per frame (index None if single-frame).

    pydicom converts element values only when they are accessed, so a corrupt attribute can
    raise anywhere in the conversion: any failure is a ``cannot read DICOM`` :class:`UserError`.
    """
    try:
        return _convert_dataset(ds, path, intensity)
    except UserError:
        raise
    except Exception as exc:  # a corrupt element of the user's file
        raise UserError(f"cannot read DICOM {path}: {first_line(exc)}") from None


def _position(value: Any) -> tuple[float, ...] | None:
    """ImagePositionPatient as floats, or None if missing or unreadable (it is metadata only)."""
    try:
        return tuple(float(v) for v in value) if value else None
    except (TypeError, ValueError):
        return None


def _convert_dataset(ds: Any, path: Path, intensity: Intensity) -> list[Slice]:
    """The work of :func:`_dataset_slices`."""
    pydicom, processing = _pydicom(path)
    if not _has_pixels(ds):
        raise UserError(f"cannot read DICOM {path}: no pixel data (not an image)")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise UserError(
            f"cannot read DICOM {path}: cannot decode pixel data: {_decode_failure(ds, exc)}"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(_first_number(ds.get("SamplesPerPixel")) or 1)
    try:
        if photometric == "PALETTE COLOR":
            arr = np.asarray(processing.apply_color_lut(arr, ds))
            samples = 3
        elif photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            arr = np.asarray(processing.convert_color_space(arr, photometric, "RGB"))
    except Exception as exc:
        raise UserError(f"cannot read DICOM {path}: colour conversion: {first_line(exc)}") from None
    colour = samples > 1
    multi = arr.ndim == (4 if colour else 3)
    frames = arr if multi else arr[np.newaxis]
    if frames.ndim != (4 if colour else 3):
        raise UserError(f"cannot read DICOM {path}: unexpected pixel array shape {arr.shape}")

    position = ds.get("ImagePositionPatient")
    common = {
        "modality": str(ds.get("Modality", "")) or None,
        "photometric": photometric or None,
        "frames": int(frames.shape[0]),
        "instance": _first_number(ds.get("InstanceNumber")),
        "position": _position(position),
        "orientation": _position(ds.get("ImageOrientationPatient")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
        "series_number": _first_number(ds.get("SeriesNumber")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")) or None,
    }
    out: list[Slice] = []
    for f, raw in enumerate(frames):
        if colour:
            image, info = normalise(raw, Intensity(percentile=intensity.percentile))
            rescale = None
        else:
            values, rescale = _rescale(ds, processing, raw, f, path)
            default, window = _file_default(ds, processing, f)
            image, info = normalise(values, intensity, default, window)
            if photometric == "MONOCHROME1" and not (
                info["constant"] and info["intensity"] in ("minmax", "none")
            ):
                image = np.ascontiguousarray(1.0 - image, dtype=np.float32)
        meta = {**common, "rescale": rescale, "frame": f if multi else None, **info}
        out.append(Slice(image=image, source=Path(path), index=f if multi else None, meta=meta))
    return out


def read_dicom(path: Path, intensity: Intensity = DEFAULT_INTENSITY) -> list[Slice]:
    """Read a DICOM file: one slice per frame.

    Args:
        path: The DICOM file (with or without the 128-byte preamble).
        intensity: Window / percentile options (default: the file's window or VOI LUT, else
            min-max).

    Returns:
        One :class:`Slice` per frame: (H, W) grey or (H, W, 3) colour, float32 in [0, 1];
        ``index`` is the frame number for multi-frame files, None otherwise.

    Raises:
        UserError: pydicom missing, or ``cannot read DICOM <path>: <reason>`` for a missing,
            garbage, truncated or non-image file or undecodable (compressed) pixel data; for a
            compressed transfer syntax the reason names it and every decoder's failure.
    """
    pydicom, _ = _pydicom(path)
    return _dataset_slices(_dcmread(pydicom, path), Path(path), intensity)


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


SPACING_TOLERANCE_MM = 0.01
"""How far consecutive slice steps of a series may differ for it to get one affine."""


def series_affine(datasets: Sequence[Any]) -> np.ndarray | None:
    """The RAS+ affine of a series stacked as an array ``(rows, columns, slices)`` in reading order.

    nibabel's DICOM wrapper gives the in-plane part from the first slice (ImageOrientationPatient,
    PixelSpacing, ImagePositionPatient; its array axes are the pixel array's rows and columns);
    the slice axis is the step between consecutive ImagePositionPatient (nibabel's slice normal
    times the slice spacing for a single slice); a series whose steps differ by more than
    :data:`SPACING_TOLERANCE_MM` (uneven spacing, a missing or skipped slice) gets None, since
    no single affine describes it. DICOM's
    patient space is LPS, NIfTI's world RAS: the first two world axes are negated.

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
    try:
        with warnings.catch_warnings():  # nibabel.nicom warns about its readers on import
            warnings.simplefilter("ignore")
            from nibabel.nicom.dicomwrappers import wrapper_from_data

            lps = np.array(wrapper_from_data(datasets[0]).affine, dtype=np.float64)
    except Exception:  # nibabel missing, or geometry tags missing or unreadable
        return None
    if len(datasets) > 1:
        positions = [_position(ds.get("ImagePositionPatient")) for ds in datasets]
        if any(p is None or len(p) != 3 for p in positions):
            return None
        steps = np.diff(np.asarray(positions, dtype=np.float64), axis=0)
        step = steps.mean(axis=0)
        if np.abs(steps - step).max() > SPACING_TOLERANCE_MM:  # uneven, or a slice missing
            return None
        lps[:3, 2] = step
    if not np.isfinite(lps).all() or abs(float(np.linalg.det(lps[:3, :3]))) < 1e-12:
        return None
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _series_order(group: list[tuple[Path, Any]]) -> tuple[Any, ...]:
    ds = group[0][1]
    number = _first_number(ds.get("SeriesNumber"))
    return (number is None, number or 0.0, str(ds.get("SeriesInstanceUID", "")))


def read_dicom_files(
    folder: Path,
    files: Sequence[Path],
    intensity: Intensity = DEFAULT_INTENSITY,
    bad: list[tuple[Path, str]] | None = None,
) -> list[Slice]:
    """Read the DICOM files of a folder, one series per SeriesInstanceUID.

    This is the reading half of :func:`iqeclip.data.readers.registry.read_dicom_series`, which
    finds the folder's DICOM files. Files without pixel data (DICOMDIR, reports) are skipped.
    Files are grouped by SeriesInstanceUID (files without one form one group); the series come
    in SeriesNumber order (then UID), and within a series the files are ordered by
    ImagePositionPatient along the slice normal (see :func:`_sorted_series`), else by
    InstanceNumber, then name.

    Args:
        folder: The series folder.
        files: Its DICOM files.
        intensity: As for :func:`read_dicom`.
        bad: If a list, an unreadable or undecodable file is left out and appended to it as
            ``(file, one-line reason)``; if None (default) it raises.

    Returns:
        The slices, series by series; ``index`` runs 0..N-1 within each series, ``source`` is
        each slice's file, ``meta["series"]`` the folder, ``meta["series_uid"]`` the series and
        ``meta["frame"]`` the frame within a multi-frame file (None otherwise), and
        ``meta["series_affine"]`` the series' RAS+ affine (:func:`series_affine`; None for a
        series with a multi-frame file or without usable geometry).

    Raises:
        UserError: pydicom missing, no files or no readable DICOM image among them, or (without
            ``bad``) any DICOM file unreadable (named).
    """
    pydicom, _ = _pydicom(folder)
    if not files:
        raise UserError(f"cannot read DICOM series {folder}: no DICOM files in it")
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for path in files:
        try:
            ds = _dcmread(pydicom, path)
        except UserError as exc:
            if bad is None:
                raise
            bad.append((Path(path), str(exc)))
            continue
        if _has_pixels(ds):
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((Path(path), ds))
    out: list[Slice] = []
    for group in sorted(groups.values(), key=_series_order):
        series: list[Slice] = []
        decoded: list[Any] = []
        for path, ds in _sorted_series(group):
            try:
                slices = _dataset_slices(ds, path, intensity)
            except UserError as exc:
                if bad is None:
                    raise
                bad.append((path, str(exc)))
                continue
            decoded.append(ds)
            series += slices
        affine = series_affine(decoded) if len(series) == len(decoded) else None
        for index, s in enumerate(series):
            s.index = index
            s.meta.update(series=folder, series_affine=affine)
        out += series
    if not out:
        raise UserError(f"cannot read DICOM series {folder}: none of its DICOM files is an image")
    return out
