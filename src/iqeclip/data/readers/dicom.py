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
:class:`~iqeclip.data.readers.dicom_readers.DicomReader`.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from iqeclip.data.readers.base import DicomInfo, Slice
from iqeclip.data.readers.deflated import deflated_header
from iqeclip.data.readers.errors import (
    INSTALL_HINT,
    MissingPackage,
    UnreadableFile,
    cannot_read,
    need,
)
from iqeclip.data.readers.intensity import (
    DEFAULT_INTENSITY,
    Default,
    Intensity,
    linear_window,
    normalise,
    sigmoid_window,
)
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.data.readers.orientation import ORIENTATIONS, View, slice_position_mm, view_of
from iqeclip.errors import UserError, first_line, param

__all__ = ["dicom_header", "read_dicom"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM's patient space is LPS, NIfTI's world RAS: the first two world axes change sign."""
NON_IMAGE_MODALITIES = frozenset({"RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "SR", "PR"})
"""Modalities whose pixel data, if any, is not a picture of the patient (a dose grid, labels)."""


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom's own log lines off while we read: a failure is reported once, by us, in one line
    (pydicom logs each decoder plugin's traceback before raising)."""
    log = logging.getLogger("pydicom")  # its decoders log on child loggers: silence them all
    before = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(before)


def _not_an_image(ds: Any) -> str | None:
    """Why a dataset with pixel data is no image (an RT dose grid, a segmentation), or None.

    Only image storage SOP classes are images: a SOP class that pydicom knows and whose name
    lacks "Image Storage", or a modality of :data:`NON_IMAGE_MODALITIES`, is refused. An unknown
    (private) SOP class with pixel data is read.
    """
    uid = ds.get("SOPClassUID")
    if uid is not None:
        try:
            name = str(uid.name)
        except AttributeError:
            name = str(uid)
        if name != str(uid) and "Image Storage" not in name:
            return f"not an image: its SOP class is {name}"
    modality = str(ds.get("Modality", "")).strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"not an image: its modality is {modality}"
    return None


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
    raise MissingPackage(f"reading {path} needs pydicom >= 2.4: {INSTALL_HINT}")


def _pixel_bytes(ds: Any, path: Path, limits: Limits) -> int:
    """The bytes of a dataset's pixel data as its image elements declare them, once they are
    checked against ``limits``."""
    declared = _declared(ds, path, limits)
    samples = int(_first_number(ds.get("SamplesPerPixel")) or 1)
    bits = int(_first_number(ds.get("BitsAllocated")) or 16)
    return math.ceil(declared.pixels * max(samples, 1) * max(bits, 1) / 8)


def _declared(ds: Any, path: Path, limits: Limits) -> Declared:
    """A dataset's frames and their pixels (Rows x Columns x NumberOfFrames), checked against
    ``limits`` before its pixel data is decoded."""
    rows = int(_first_number(ds.get("Rows")) or 0)
    columns = int(_first_number(ds.get("Columns")) or 0)
    frames = max(int(_first_number(ds.get("NumberOfFrames")) or 1), 1)
    where = f"cannot read DICOM {path}"
    limits.check_slice(where, columns, rows, "each frame" if frames > 1 else "image", path)
    limits.check_input(where, frames, rows * columns * frames, "frames", path)
    return Declared(frames, rows * columns * frames)


def _dcmread(
    pydicom: ModuleType, path: Path, limits: Limits = DEFAULT_LIMITS, header: bool = False
) -> Any:
    """Read a DICOM dataset (``header``: up to its pixel data); a file without preamble is read
    with ``force=True``. A deflated file's declared size is checked against ``limits`` before
    pydicom inflates it (:func:`~iqeclip.data.readers.deflated.deflated_header`)."""
    path = Path(path)
    if path.is_dir():
        raise cannot_read("DICOM", path, "is a folder (read it as a series)")
    if not path.is_file():
        raise cannot_read("DICOM", path, "no such file")
    errors = importlib.import_module("pydicom.errors")
    try:
        with _quiet():
            deflated = deflated_header(
                pydicom, path, partial(_pixel_bytes, path=path, limits=limits)
            )
            if header and deflated is not None:
                return deflated
            try:
                return pydicom.dcmread(path, stop_before_pixels=header)
            except errors.InvalidDicomError:
                return pydicom.dcmread(path, stop_before_pixels=header, force=True)
    except UserError:
        raise
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise cannot_read("DICOM", path, first_line(exc)) from None


def dicom_header(path: Path, limits: Limits = DEFAULT_LIMITS) -> Declared:
    """The frames a DICOM file holds and their pixels, from its header (nothing decoded or, for
    a deflated file, inflated), checked against ``limits``.

    Raises:
        UserError: pydicom missing, an unreadable file, or an
            :class:`~iqeclip.data.readers.limits.OverLimit` naming the limit.
    """
    pydicom, _ = _pydicom(path)
    return _declared(_dcmread(pydicom, path, limits, header=True), Path(path), limits)


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
        raise cannot_read("DICOM", path, f"modality LUT: {first_line(exc)}") from None
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


def _undecodable(ds: Any, exc: BaseException, path: Path) -> UnreadableFile:
    """Why the pixel data did not decode, on one line: a :class:`MissingPackage` when pydicom
    says its decoders are missing.

    pydicom lists each decoder plugin's failure (or missing packages) on the lines after a
    first line ending in ``:``; they are kept, joined by ``;``. A compressed transfer syntax is
    named (name and UID), with the install hint when its decoders are missing.
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
    missing = False
    if compressed:
        reason = f"{reason} (transfer syntax {syntax.name}, {syntax})"
        missing = "missing dependencies" in reason
        if missing:
            reason += f"; the decoders come with {INSTALL_HINT}"
    error = cannot_read("DICOM", path, f"cannot decode pixel data: {reason}")
    return MissingPackage(str(error), path, error.reason) if missing else error


def _dataset_slices(
    ds: Any, path: Path, intensity: Intensity, orientation: str, limits: Limits = DEFAULT_LIMITS
) -> list[Slice]:
    """Convert a read dataset into one :class:`Slice` per frame (index None if single-frame),
    its declared size checked against ``limits`` before its pixel data is decoded.

    pydicom converts element values only when they are accessed, so a corrupt attribute can
    raise anywhere in the conversion: any failure is a ``cannot read DICOM`` :class:`UserError`.
    """
    try:
        with _quiet():
            return _convert_dataset(ds, path, intensity, orientation, limits)
    except UserError:
        raise
    except Exception as exc:  # a corrupt element of the user's file
        raise cannot_read("DICOM", path, first_line(exc)) from None


def _position(value: Any) -> tuple[float, ...] | None:
    """ImagePositionPatient as floats, or None if missing or unreadable (it is metadata only)."""
    try:
        return tuple(float(v) for v in value) if value else None
    except (TypeError, ValueError):
        return None


def _numbers(value: Any, count: int) -> np.ndarray | None:
    """``count`` finite floats of a multi-valued element, or None."""
    found = _position(value)
    if found is None or len(found) != count or not all(math.isfinite(v) for v in found):
        return None
    return np.asarray(found, dtype=np.float64)


def _frame_tag(ds: Any, frame: int, sequence: str, keyword: str) -> Any:
    """A geometry element of one frame: its functional group (per-frame, then shared), then the
    dataset's top level."""
    item = _functional_item(ds, frame, sequence)
    if item is not None and keyword in item:
        return item.get(keyword)
    return ds.get(keyword)


@dataclass(frozen=True)
class _Plane:
    """One frame's plane in RAS world coordinates (DICOM PS3.3 C.7.6.2.1.1)."""

    origin: np.ndarray  # centre of the first pixel
    column_step: np.ndarray  # one column to the right (ImageOrientationPatient[:3] x spacing)
    row_step: np.ndarray  # one row down
    normal: np.ndarray  # unit, column_step x row_step in LPS

    @property
    def directions(self) -> np.ndarray:
        """The RAS directions of a DICOM grid's voxel axes: column index, row index, slice."""
        return np.stack([self.column_step, self.row_step, self.normal], axis=1)

    def affine(self, step: np.ndarray | None = None) -> np.ndarray:
        """The RAS affine of a grid ``(column, row, slice)`` through this frame, slices
        ``step`` apart (default: the unit normal)."""
        affine = np.eye(4)
        affine[:3, 0], affine[:3, 1] = self.column_step, self.row_step
        affine[:3, 2] = self.normal if step is None else step
        affine[:3, 3] = self.origin
        return affine


def _plane(ds: Any, frame: int) -> _Plane | None:
    """A frame's plane from ImageOrientationPatient, ImagePositionPatient and PixelSpacing, or
    None where one is missing or degenerate (a radiograph, a secondary capture)."""
    iop = _numbers(_frame_tag(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    ipp = _numbers(_frame_tag(ds, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
    spacing = _numbers(_frame_tag(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if iop is None or ipp is None:
        return None
    if spacing is None or not (spacing > 0).all():
        spacing = np.ones(2)
    flip = LPS_TO_RAS[:3, :3]
    normal = np.cross(iop[:3], iop[3:])
    length = float(np.linalg.norm(normal))
    if not length > 1e-6:
        return None
    return _Plane(
        origin=flip @ ipp,
        column_step=flip @ (iop[:3] * spacing[1]),
        row_step=flip @ (iop[3:] * spacing[0]),
        normal=flip @ (normal / length),
    )


def _view(plane: _Plane | None, orientation: str, path: Path) -> View:
    """How a frame (taken as the grid slice ``pixels.T``) is turned: the radiological view from
    its plane; as stored under the older rules or without geometry."""
    if plane is None or orientation != "radiological":
        return View(transpose=True)  # the transpose of the grid slice: the pixel array as stored
    return view_of(plane.directions, orientation, None, "DICOM", path)


def _convert_dataset(
    ds: Any, path: Path, intensity: Intensity, orientation: str, limits: Limits
) -> list[Slice]:
    """The work of :func:`_dataset_slices`."""
    pydicom, processing = _pydicom(path)
    if not _has_pixels(ds):
        raise cannot_read("DICOM", path, "no pixel data (not an image)")
    refused = _not_an_image(ds)
    if refused is not None:
        raise cannot_read("DICOM", path, refused)
    _declared(ds, path, limits)  # before the pixel data is decoded
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise _undecodable(ds, exc, path) from None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(_first_number(ds.get("SamplesPerPixel")) or 1)
    try:
        if photometric == "PALETTE COLOR":
            arr = np.asarray(processing.apply_color_lut(arr, ds))
            samples = 3
        elif photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
            arr = np.asarray(processing.convert_color_space(arr, photometric, "RGB"))
    except Exception as exc:
        raise cannot_read("DICOM", path, f"colour conversion: {first_line(exc)}") from None
    colour = samples > 1
    multi = arr.ndim == (4 if colour else 3)
    frames = arr if multi else arr[np.newaxis]
    if frames.ndim != (4 if colour else 3):
        raise cannot_read("DICOM", path, f"unexpected pixel array shape {arr.shape}")

    info = DicomInfo(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")) or None,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        series_number=_first_number(ds.get("SeriesNumber")),
        instance=_first_number(ds.get("InstanceNumber")),
        position=_position(ds.get("ImagePositionPatient")),
        modality=str(ds.get("Modality", "")) or None,
        photometric=photometric or None,
        rescale=None,
        frame=None,
        frames=int(frames.shape[0]),
    )
    out: list[Slice] = []
    for f, raw in enumerate(frames):
        plane = _plane(ds, f)
        if colour:
            image, levels = normalise(raw, Intensity(percentile=intensity.percentile))
            rescale = None
        else:
            values, rescale = _rescale(ds, processing, raw, f, path)
            default, window = _file_default(ds, processing, f)
            image, levels = normalise(values, intensity, default, window)
            if photometric == "MONOCHROME1" and not (
                levels.constant and levels.rule in ("minmax", "none")
            ):
                image = np.ascontiguousarray(1.0 - image, dtype=np.float32)
        where = None
        if plane is not None:
            where = slice_position_mm(plane.affine(), (raw.shape[1], raw.shape[0], 1), View(), 0)
        out.append(
            Slice(
                image=_view(plane, orientation, path).to_view(np.swapaxes(image, 0, 1)),
                source=Path(path),
                index=f if multi else None,
                levels=levels,
                slice_mm=where,
                dicom=replace(info, rescale=rescale, frame=f if multi else None),
            )
        )
    return out


def read_dicom(
    path: Path,
    intensity: Intensity = DEFAULT_INTENSITY,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read a DICOM file: one slice per frame.

    Args:
        path: The DICOM file (with or without the 128-byte preamble).
        intensity: Window / percentile options (default: the file's window or VOI LUT, else
            min-max).
        orientation: One of :data:`~iqeclip.data.readers.orientation.ORIENTATIONS`: with
            ``radiological`` each frame with a plane (ImageOrientationPatient) is turned into the
            radiological view; else (and without a plane) frames keep the stored pixel order.
        limits: The largest file read: a frame's size (Rows x Columns), the frames and their
            pixels together, checked from the header before the pixel data is decoded (and,
            for a deflated file, before its dataset is inflated).

    Returns:
        One :class:`Slice` per frame: (H, W) grey or (H, W, 3) colour, float32 in [0, 1];
        ``index`` is the frame number for multi-frame files, None otherwise; ``slice_mm`` is
        where the frame lies (None without geometry), ``dicom`` its
        :class:`~iqeclip.data.readers.base.DicomInfo`.

    Raises:
        UserError: pydicom missing, or ``cannot read DICOM <path>: <reason>`` for a missing,
            garbage, truncated or non-image file or undecodable (compressed) pixel data; for a
            compressed transfer syntax the reason names it and every decoder's failure; an
            :class:`~iqeclip.data.readers.limits.OverLimit` for a file over ``limits``.
    """
    if orientation not in ORIENTATIONS:
        raise UserError(
            f"{param('orientation')} must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}"
        )
    pydicom, _ = _pydicom(path)
    ds = _dcmread(pydicom, path, limits)
    return _dataset_slices(ds, Path(path), intensity, orientation, limits)
