"""Reading medical files (DICOM, NIfTI, 16-bit PNG/TIFF) as 2-D slices for the detector.

Every reader returns a list of :class:`Slice`: a 2-D image in [0, 1] (float32, ``(H, W)`` for
grey sources, ``(H, W, 3)`` for colour ones) with the file it came from, its index within a volume
or multi-frame file and metadata. :func:`slice_to_uint8_rgb` turns a slice into the model's
``(3, size, size)`` uint8 input with the same bicubic PIL resize as :func:`iqeclip.data.io.load_image`.

pydicom and nibabel are an optional extra (``pip install 'iqeclip[medical]'``); they are imported
only when a DICOM or NIfTI file is read, and a missing one is a one-line :class:`UserError`.

Intensity rules (:class:`Intensity`), per slice:

- an explicit ``window=(centre, width)`` maps ``clip((x - (c - w/2)) / w, 0, 1)`` (for CT: in HU);
- else an explicit ``percentile=(lo, hi)`` clips to those percentiles of the slice, then min-max;
- else the source's default: DICOM uses the file's Window Center/Width (first value when
  multi-valued; per-frame values of enhanced multi-frame files win; ``VOILUTFunction`` SIGMOID is
  honoured), else its VOI LUT Sequence, else min-max; NIfTI and 16-bit/float images use min-max;
  8-bit images are kept as they are (``v / 255``, so they match ``load_image`` exactly).

DICOM pixel values are first passed through the modality transform (Modality LUT Sequence or
Rescale Slope/Intercept, per frame for enhanced files), so windows are in output units (HU for
CT). MONOCHROME1 images are inverted after windowing (``1 - x``). Colour sources (RGB, YBR,
PALETTE COLOR DICOM; RGB images) are min-max normalised jointly over their three channels (or
percentile-clipped); windows do not apply to them.

Non-finite values (NaN, +-inf) are replaced by the slice's finite minimum and counted in
``meta["nonfinite"]``. A slice without any finite value, or a constant one, gives zeros (a window
still maps a constant slice to its windowed grey) and ``meta["constant"] = True``.

NIfTI slices keep the array order: for ``axis=2``, ``image[i, j] = volume[i, j, k]`` (rows are the
first voxel axis, columns the second; no re-orientation to a radiological view), so
``np.stack(maps, axis=axis)`` is a volume of the file's shape that can be written back with
``meta["affine"]``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqeclip.data.io import _WIDE_MODES, _check_size, _open
from iqeclip.errors import UserError

__all__ = [
    "IMAGE_SUFFIXES",
    "MEDICAL_SUFFIXES",
    "Intensity",
    "Slice",
    "is_medical",
    "parse_percentile",
    "parse_window",
    "read_any",
    "read_dicom",
    "read_dicom_series",
    "read_nifti",
    "read_wide_image",
    "slice_to_uint8_rgb",
]

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
MEDICAL_SUFFIXES: tuple[str, ...] = (*DICOM_SUFFIXES, *NIFTI_SUFFIXES, ".tif", ".tiff", ".png")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
"""Files :func:`read_any` reads with PIL (:func:`read_wide_image`)."""

_INSTALL_HINT = "pip install 'iqeclip[medical]'"
_WINDOW_HELP = "--window expects CENTRE,WIDTH with a positive width (e.g. 40,400)"
_PERCENTILE_HELP = "--percentile expects LOW,HIGH with 0 <= LOW < HIGH <= 100 (e.g. 1,99)"


@dataclass
class Slice:
    """One 2-D image ready for the detector.

    Attributes:
        image: float32 in [0, 1], shape (H, W) for grey sources or (H, W, 3) for colour ones.
        source: The file it came from (for a DICOM series: the slice's own file).
        index: Slice/frame/page index within a volume, multi-frame file or series; None for a
            plain 2-D image.
        meta: Metadata. Always ``nonfinite`` (int), ``constant`` (bool), ``intensity`` (the rule
            used: ``"window"``, ``"percentile"``, ``"file-window"``, ``"voi-lut"``, ``"minmax"``,
            ``"8bit"`` or ``"none"``) and ``window`` ((centre, width) used, or None). DICOM adds
            ``modality``, ``photometric``, ``rescale`` ((slope, intercept) or None), ``frame``,
            ``frames``, ``instance``, ``position``, ``series_uid`` (and ``series``, the folder,
            for a series); NIfTI adds ``affine`` (4x4), ``header``, ``shape`` (the 3-D volume
            the slices stack back into), ``file_shape`` and ``axis``; PIL images add ``mode``.
    """

    image: np.ndarray
    source: Path
    index: int | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Intensity:
    """How raw values become [0, 1] greys (see the module docstring).

    Attributes:
        window: (centre, width), e.g. (40, 400) for a CT soft-tissue window in HU; overrides the
            file's window / VOI LUT.
        percentile: (low, high) percentiles, e.g. (1, 99) for MRI: clip, then min-max.

    Raises:
        UserError: A non-positive width, percentiles outside 0 <= low < high <= 100, or both
            options at once.
    """

    window: tuple[float, float] | None = None
    percentile: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.percentile is not None:
            raise UserError("--window and --percentile cannot be used together")
        if self.window is not None:
            c, w = _two_floats(self.window, _WINDOW_HELP)
            if not w > 0:
                raise UserError(f"{_WINDOW_HELP}, got {self.window!r}")
            object.__setattr__(self, "window", (c, w))
        if self.percentile is not None:
            lo, hi = _two_floats(self.percentile, _PERCENTILE_HELP)
            if not 0.0 <= lo < hi <= 100.0:
                raise UserError(f"{_PERCENTILE_HELP}, got {self.percentile!r}")
            object.__setattr__(self, "percentile", (lo, hi))


def _two_floats(values: Any, help_text: str, shown: Any = None) -> tuple[float, float]:
    """Two finite floats from a pair, else ``UserError("<help_text>, got <shown>")``."""
    shown = values if shown is None else shown
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{help_text}, got {shown!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UserError(f"{help_text}, got {shown!r}")
    return a, b


def parse_window(text: str) -> tuple[float, float]:
    """Parse a ``--window`` value.

    Args:
        text: ``"CENTRE,WIDTH"``, e.g. ``"40,400"`` or ``"-600,1500"``.

    Returns:
        (centre, width) as floats.

    Raises:
        UserError: Naming ``--window`` for anything else or a non-positive width.
    """
    parts = str(text).split(",")
    if len(parts) != 2:
        raise UserError(f"{_WINDOW_HELP}, got {text!r}")
    centre, width = _two_floats(parts, _WINDOW_HELP, text)
    if not width > 0:
        raise UserError(f"{_WINDOW_HELP}, got {text!r}")
    return centre, width


def parse_percentile(text: str) -> tuple[float, float]:
    """Parse a ``--percentile`` value.

    Args:
        text: ``"LOW,HIGH"``, e.g. ``"1,99"``.

    Returns:
        (low, high) as floats with 0 <= low < high <= 100.

    Raises:
        UserError: Naming ``--percentile`` for anything else.
    """
    parts = str(text).split(",")
    if len(parts) != 2:
        raise UserError(f"{_PERCENTILE_HELP}, got {text!r}")
    lo, hi = _two_floats(parts, _PERCENTILE_HELP, text)
    if not 0.0 <= lo < hi <= 100.0:
        raise UserError(f"{_PERCENTILE_HELP}, got {text!r}")
    return lo, hi


# --------------------------------------------------------------------------------------------
# Normalisation shared by all readers.

_Default = tuple[str, Callable[[np.ndarray], np.ndarray]]


def _linear_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip((x - (centre - width / 2.0)) / width, 0.0, 1.0)


def _sigmoid_window(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - centre) / width, -700.0, 700.0)))


def _normalise(
    values: np.ndarray,
    intensity: Intensity,
    default: _Default | None = None,
    window_used: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Map raw values of one slice to [0, 1].

    Args:
        values: Raw values, any shape ((H, W) or (H, W, 3)), any numeric dtype.
        intensity: Explicit options; they win over ``default``.
        default: (rule name, function to [0, 1]) used when no option is given; min-max if None.
        window_used: The file window behind ``default``, recorded in the metadata.

    Returns:
        (float32 image of the same shape in [0, 1], metadata with ``nonfinite``, ``constant``,
        ``intensity`` and ``window``).
    """
    x = np.asarray(values, dtype=np.float64)
    info: dict[str, Any] = {
        "nonfinite": 0,
        "constant": False,
        "intensity": "minmax",
        "window": None,
    }
    finite = np.isfinite(x)
    n_bad = int(x.size - np.count_nonzero(finite))
    if n_bad:
        info["nonfinite"] = n_bad
        if n_bad == x.size:
            info.update(constant=True, intensity="none")
            return np.zeros(x.shape, dtype=np.float32), info
        x = np.where(finite, x, x[finite].min())
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    info["constant"] = not hi > lo

    out: np.ndarray | None = None
    if intensity.window is not None:
        out = _linear_window(x, *intensity.window)
        info.update(intensity="window", window=intensity.window)
    elif intensity.percentile is not None:
        p_lo, p_hi = (float(v) for v in np.percentile(x, intensity.percentile))
        if p_hi > p_lo:
            out = (np.clip(x, p_lo, p_hi) - p_lo) / (p_hi - p_lo)
            info["intensity"] = "percentile"
    elif default is not None:
        name, function = default
        out = function(x)
        info.update(intensity=name, window=window_used)
    if out is None:  # min-max (also the fallback for degenerate percentiles)
        out = np.zeros_like(x) if info["constant"] else (x - lo) / (hi - lo)
    image = np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
    return image, info


# --------------------------------------------------------------------------------------------
# File type detection.


def _lower_name(path: Path) -> str:
    return Path(path).name.lower()


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_dicom_file(path: Path) -> bool:
    return _lower_name(path).endswith(DICOM_SUFFIXES) or _has_dicm_magic(path)


def _is_nifti_file(path: Path) -> bool:
    return _lower_name(path).endswith(NIFTI_SUFFIXES)


def _series_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and _is_dicom_file(p)
    )


def is_medical(path: Path) -> bool:
    """Whether a path is DICOM (by suffix or the ``DICM`` magic at byte 128) or NIfTI (by suffix).

    16-bit PNG/TIFF files are not "medical" here (they are ordinary images to this test). A
    folder is medical when it directly holds a DICOM file (a series).

    Args:
        path: A file or folder; it need not exist for the suffix checks.

    Returns:
        True for DICOM / NIfTI files and DICOM series folders.
    """
    path = Path(path)
    if _is_nifti_file(path) or _lower_name(path).endswith(DICOM_SUFFIXES):
        return True
    if path.is_dir():
        return any(
            p.is_file() and not p.name.startswith(".") and _is_dicom_file(p) for p in path.iterdir()
        )
    return _has_dicm_magic(path)


def _need(module: str, path: Path) -> ModuleType:
    """Import an optional dependency or raise the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"reading {path} needs {module}: {_INSTALL_HINT}") from None


def _reason(exc: BaseException) -> str:
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------
# DICOM.


def _pydicom(path: Path) -> tuple[ModuleType, ModuleType]:
    """pydicom and its pixel-processing module (``pydicom.pixels``; 2.x: the handlers' util)."""
    pydicom = _need("pydicom", path)
    for name in ("pydicom.pixels", "pydicom.pixel_data_handlers.util"):
        try:
            processing = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(processing, "apply_modality_lut"):
            return pydicom, processing
    raise UserError(f"reading {path} needs pydicom >= 2.4: {_INSTALL_HINT}")


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
        raise UserError(f"cannot read DICOM {path}: {_reason(exc)}") from None


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
        raise UserError(f"cannot read DICOM {path}: modality LUT: {_reason(exc)}") from None
    slope = _first_number(ds.get("RescaleSlope"))
    intercept = _first_number(ds.get("RescaleIntercept"))
    has_rescale = slope is not None and intercept is not None and not ds.get("ModalityLUTSequence")
    return values, ((slope, intercept) if has_rescale else None)


def _file_default(ds: Any, processing: ModuleType, frame: int) -> tuple[_Default | None, Any]:
    """The file's own VOI transform for one frame: (default rule, window) or (None, None)."""
    item = _functional_item(ds, frame, "FrameVOILUTSequence")
    for source in (item, ds):
        if source is None:
            continue
        centre = _first_number(source.get("WindowCenter"))
        width = _first_number(source.get("WindowWidth"))
        if centre is not None and width is not None and width > 0:
            sigmoid = str(source.get("VOILUTFunction", "")).strip().upper() == "SIGMOID"
            mapping = _sigmoid_window if sigmoid else _linear_window
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
        raise UserError(f"cannot read DICOM {path}: {_reason(exc)}") from None


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
            f"cannot read DICOM {path}: cannot decode pixel data: {_reason(exc)}"
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
        raise UserError(f"cannot read DICOM {path}: colour conversion: {_reason(exc)}") from None
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
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
    }
    out: list[Slice] = []
    for f, raw in enumerate(frames):
        if colour:
            image, info = _normalise(raw, Intensity(percentile=intensity.percentile))
            rescale = None
        else:
            values, rescale = _rescale(ds, processing, raw, f, path)
            default, window = _file_default(ds, processing, f)
            image, info = _normalise(values, intensity, default, window)
            if photometric == "MONOCHROME1" and not (
                info["constant"] and info["intensity"] in ("minmax", "none")
            ):
                image = np.ascontiguousarray(1.0 - image, dtype=np.float32)
        meta = {**common, "rescale": rescale, "frame": f if multi else None, **info}
        out.append(Slice(image=image, source=Path(path), index=f if multi else None, meta=meta))
    return out


def read_dicom(path: Path, intensity: Intensity = Intensity()) -> list[Slice]:
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
            garbage, truncated or non-image file or undecodable (compressed) pixel data.
    """
    pydicom, _ = _pydicom(path)
    return _dataset_slices(_dcmread(pydicom, path), Path(path), intensity)


def _series_key(item: tuple[Path, Any]) -> tuple[Any, ...]:
    path, ds = item
    instance = _first_number(ds.get("InstanceNumber"))
    position = ds.get("ImagePositionPatient")
    z = None
    if position is not None:
        try:
            z = _first_number(position[2])
        except (IndexError, TypeError):
            z = None
    return (instance is None, instance or 0.0, z is None, z or 0.0, path.name)


def read_dicom_series(folder: Path, intensity: Intensity = Intensity()) -> list[Slice]:
    """Read the DICOM files directly inside a folder as one series.

    Files are DICOM by suffix (``.dcm``, ``.dicom``) or by the ``DICM`` magic; other files,
    hidden files and sub-folders are ignored, and DICOM files without pixel data (DICOMDIR,
    reports) are skipped. Files are ordered by InstanceNumber, then ImagePositionPatient[2], then
    name (missing values last); several series in one folder are not separated.

    Args:
        folder: The series folder.
        intensity: As for :func:`read_dicom`.

    Returns:
        The slices in series order; ``index`` runs 0..N-1 over the whole series, ``source`` is
        each slice's file, ``meta["series"]`` the folder and ``meta["frame"]`` the frame within
        a multi-frame file (None otherwise).

    Raises:
        UserError: pydicom missing, the folder missing or holding no DICOM image, or any DICOM
            file unreadable (named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"cannot read DICOM series {folder}: no such folder")
    pydicom, _ = _pydicom(folder)
    files = _series_files(folder)
    if not files:
        raise UserError(f"cannot read DICOM series {folder}: no DICOM files in it")
    datasets = [(p, _dcmread(pydicom, p)) for p in files]
    datasets = [(p, ds) for p, ds in datasets if _has_pixels(ds)]
    if not datasets:
        raise UserError(f"cannot read DICOM series {folder}: none of its DICOM files is an image")
    datasets.sort(key=_series_key)
    out: list[Slice] = []
    for path, ds in datasets:
        for s in _dataset_slices(ds, path, intensity):
            s.index = len(out)
            s.meta["series"] = folder
            out.append(s)
    return out


# --------------------------------------------------------------------------------------------
# NIfTI.


def read_nifti(path: Path, axis: int = 2, intensity: Intensity = Intensity()) -> list[Slice]:
    """Read a NIfTI image (``.nii`` / ``.nii.gz``) as 2-D slices along one voxel axis.

    Values are ``get_fdata(dtype=float32)`` (scl_slope/scl_inter applied). Slices keep the array
    order, ``image = np.take(volume, index, axis=axis)``, so ``np.stack(images, axis=axis)`` has
    the volume's layout (``meta["shape"]``) for writing back with ``meta["affine"]``. Trailing
    singleton dimensions beyond the third (e.g. a 4-D file with one volume) are dropped.

    Args:
        path: The NIfTI file.
        axis: Voxel axis to slice along (0, 1 or 2; negative values count from the end).
            Ignored for 2-D images.
        intensity: Window / percentile options (default: min-max per slice).

    Returns:
        One (H, W) float32 :class:`Slice` per index along ``axis`` (``index`` set); a 2-D image
        gives one slice with ``index`` None and ``meta["axis"]`` None.

    Raises:
        UserError: nibabel missing, ``cannot read NIfTI <path>: <reason>`` for a missing or
            garbage file or a 4-D image with several volumes, or a bad axis (naming ``--axis``).
    """
    path = Path(path)
    nib = _need("nibabel", path)
    if not path.is_file():
        raise UserError(f"cannot read NIfTI {path}: no such file")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise UserError(f"cannot read NIfTI {path}: {_reason(exc)}") from None
    file_shape = tuple(int(n) for n in img.shape)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise UserError(
            f"cannot read NIfTI {path}: {data.ndim}-D image of shape {file_shape}; only 2-D and "
            "3-D images (or 4-D with a single volume) are supported: extract one volume first"
        )
    if data.ndim < 2:
        raise UserError(f"cannot read NIfTI {path}: {data.ndim}-D image of shape {file_shape}")
    common = {
        "affine": np.asarray(img.affine, dtype=np.float64),
        "header": img.header,
        "shape": tuple(int(n) for n in data.shape),
        "file_shape": file_shape,
    }
    if data.ndim == 2:
        image, info = _normalise(data, intensity)
        return [Slice(image=image, source=path, index=None, meta={**common, "axis": None, **info})]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise UserError(f"--axis must be 0, 1 or 2, got {axis!r}")
    axis = int(axis) % 3
    out = []
    for i in range(data.shape[axis]):
        image, info = _normalise(np.take(data, i, axis=axis), intensity)
        out.append(Slice(image=image, source=path, index=i, meta={**common, "axis": axis, **info}))
    return out


# --------------------------------------------------------------------------------------------
# PIL images (16-bit PNG / TIFF and ordinary images).


def _pages(path: Path) -> list[Image.Image]:
    """All pages of an image file (one for most files; several for a multi-page TIFF)."""
    first = _open(path, "image")  # validates the file with load_image's error messages
    pages = [first]
    page = 0
    try:
        with Image.open(path) as im:
            for page in range(1, int(getattr(im, "n_frames", 1))):
                im.seek(page)
                im.load()
                pages.append(im.copy())
    except Exception as exc:  # a broken later page is a problem with the user's file
        raise UserError(f"cannot read image {path}: page {page}: {_reason(exc)}") from None
    return pages


def _page_slice(im: Image.Image, path: Path, index: int | None, intensity: Intensity) -> Slice:
    mode = im.mode
    if mode in _WIDE_MODES or mode == "F":
        image, info = _normalise(np.asarray(im), intensity)
    elif mode in ("L", "LA", "1"):
        grey = np.asarray(im.convert("L"))
        image, info = _normalise(grey, intensity, ("8bit", lambda x: x / 255.0))
    else:
        try:
            rgb = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None
        colour_intensity = Intensity(percentile=intensity.percentile)
        image, info = _normalise(rgb, colour_intensity, ("8bit", lambda x: x / 255.0))
    return Slice(image=image, source=path, index=index, meta={"mode": mode, **info})


def read_wide_image(path: Path, intensity: Intensity = Intensity()) -> list[Slice]:
    """Read a PNG/TIFF (or any PIL image), with intensity options for 16-bit and float data.

    Unlike :func:`iqeclip.data.io.load_image`, whose fixed rule maps the full 16-bit range to
    8 bit, 16/32-bit integer and float images are min-max normalised per image by default (or
    windowed / percentile-clipped). 8-bit grey images are kept (``v / 255``) unless an option is
    given; colour images are kept (``v / 255``, (H, W, 3)) unless a percentile is given (windows
    do not apply to colour). Each page of a multi-page TIFF is a slice.

    Args:
        path: The image file.
        intensity: Window / percentile options.

    Returns:
        One :class:`Slice` per page; ``index`` is the page for multi-page files, else None.

    Raises:
        UserError: ``cannot read image <path>: <reason>`` for a missing or undecodable file.
    """
    path = Path(path)
    pages = _pages(path)
    if len(pages) == 1:
        return [_page_slice(pages[0], path, None, intensity)]
    return [_page_slice(im, path, i, intensity) for i, im in enumerate(pages)]


# --------------------------------------------------------------------------------------------
# Dispatch and model input.


def read_any(path: Path, axis: int = 2, intensity: Intensity = Intensity()) -> list[Slice]:
    """Read any supported input by its type.

    A folder is a DICOM series; ``.nii`` / ``.nii.gz`` is NIfTI; ``.dcm`` / ``.dicom`` or a file
    with the ``DICM`` magic is DICOM; PNG, TIFF, JPEG and BMP go to :func:`read_wide_image`.

    Args:
        path: File or series folder.
        axis: Slicing axis for NIfTI volumes.
        intensity: Window / percentile options.

    Returns:
        The slices, as the specific reader returns them.

    Raises:
        UserError: A missing path, an unsupported file type, or the reader's errors.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, intensity)
    if not path.exists():
        raise UserError(f"cannot read {path}: no such file or folder")
    if _is_nifti_file(path):
        return read_nifti(path, axis=axis, intensity=intensity)
    if _is_dicom_file(path):
        return read_dicom(path, intensity)
    if _lower_name(path).endswith(IMAGE_SUFFIXES):
        return read_wide_image(path, intensity)
    raise UserError(
        f"cannot read {path}: unsupported file type (expected DICOM, NIfTI .nii/.nii.gz, "
        f"{'/'.join(IMAGE_SUFFIXES)} or a folder of DICOM files)"
    )


def slice_to_uint8_rgb(s: Slice, size: int) -> torch.Tensor:
    """Model input from a slice: the same pre-processing as :func:`iqeclip.data.io.load_image`.

    The [0, 1] image becomes 8 bit (``round(255 x)``), grey is replicated to RGB, and PIL's
    bicubic resize gives a square; an 8-bit image read by :func:`read_wide_image` gives exactly
    ``load_image``'s tensor.

    Args:
        s: A slice with image (H, W) or (H, W, 3) in [0, 1].
        size: Side of the output in pixels.

    Returns:
        uint8 tensor of shape (3, size, size).

    Raises:
        UserError: A non-positive size.
        ValueError: An image that is neither (H, W) nor (H, W, 3).
    """
    _check_size(size)
    image = np.nan_to_num(np.asarray(s.image, dtype=np.float64), nan=0.0)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"slice image must be (H, W) or (H, W, 3), got shape {image.shape}")
    u8 = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = Image.fromarray(u8).convert("RGB").resize((size, size), Image.BICUBIC)
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
