"""Label volumes: the ground truth of a volume, read in any of the formats annotation tools
save, and put on the voxel grid of the image it labels.

A label volume (:func:`is_label_volume`) is

- a NIfTI file (nibabel), the format of BraTS and most research data sets;
- an NRRD or MetaImage file (SimpleITK), including a 3D Slicer segmentation (``.seg.nrrd``):
  a 3-D labelmap, or several layers (a 4-D or multi-component file) of which a voxel is
  labelled when any layer's value counts;
- a DICOM Segmentation (DICOM-SEG, highdicom), the format annotation tools attached to a PACS
  save; it is a ``.dcm`` file, told from an image by its SOP Class UID (:data:`SEG_STORAGE`),
  read from its header without the pixel data.

:func:`read_label_volume` reads any of them into one integer array in the file's voxel order
(a layer axis last) and its RAS affine; :func:`labelled` keeps the voxels whose value counts:
any non-zero value, or the values of ``--label_values`` (:attr:`Reading.label_values
<iqeclip.data.readers.reading.Reading.label_values>`; a DICOM-SEG's segment numbers), for
multi-label segmentations such as BraTS (1 necrosis, 2 oedema, 4 enhancing tumour).

:func:`label_slices` puts the labels on the image's grid (:func:`volume_geometry`) and cuts
them into the image's slices, in this order of preference:

1. a DICOM-SEG on the DICOM series it references: each SEG frame goes to the image slice whose
   SOPInstanceUID its source instance names (highdicom's ``get_pixels_by_source_instance``),
   exact, whatever the geometry;
2. the exact way: the label volume is the image's grid up to a permutation and flips of its
   voxel axes (affines within :data:`AFFINE_TOLERANCE_MM`), as a NIfTI label stored in another
   voxel order; nothing is interpolated;
3. otherwise (another spacing, a cropped extent, another orientation; a DICOM-SEG on a
   conversion of its series, by its frame-of-reference geometry) the labels are resampled
   onto the image's grid by nearest neighbour (SimpleITK), and one log line per label volume
   says so, from which grid and spacing to which. A label volume that does not overlap its
   image at all is an error naming both files.

Label volumes are aligned once and kept for the next slices (a small per-process cache keyed
by both files' path, modification time and size, and the reading: its label values included).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers.base import Geometry, Slice
from iqeclip.data.readers.cached import CACHED_VOLUMES, file_stamp, read_slices
from iqeclip.data.readers.dicom_readers import DicomReader
from iqeclip.data.readers.errors import UnreadableFile, cannot_read, need
from iqeclip.data.readers.itk import (
    LPS,
    ItkReader,
    itk_image,
    itk_reason,
    itk_voxels,
    ras_affine,
    read_itk_header,
)
from iqeclip.data.readers.nifti import NiftiReader
from iqeclip.data.readers.reading import DEFAULT_READING, Reading
from iqeclip.data.readers.registry import reader_for
from iqeclip.errors import UserError, first_line

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "SEG_STORAGE",
    "LabelVolume",
    "aligned_labels",
    "forget_labels",
    "is_dicom_seg",
    "is_label_volume",
    "label_slices",
    "labelled",
    "read_label_volume",
    "volume_geometry",
]

logger = logging.getLogger(__name__)

AFFINE_TOLERANCE_MM = 0.01
"""How far a label volume's affine may be from its image's (float32 storage, rounding) for the
two to be one grid."""
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
"""The SOP Class UID of a DICOM Segmentation (Segmentation Storage)."""
WHAT = "label volume"


@dataclass(frozen=True, eq=False)
class LabelVolume:
    """A label file as read (:func:`read_label_volume`).

    Attributes:
        data: Integer labels ``(X, Y, Z, layers)`` in the file's voxel order (a 2-D file has
            ``Z = 1``; a file of one layer ``layers = 1``).
        affine: Its RAS affine (4 x 4), voxel ``(x, y, z)`` to world mm.
    """

    data: np.ndarray
    affine: np.ndarray


def is_label_volume(path: Path) -> bool:
    """Whether a mask is a label volume, to be aligned to its image's volume, rather than an
    image mask: a NIfTI, NRRD or MetaImage file (a 3D Slicer ``.seg.nrrd`` included), or a
    DICOM-SEG (:func:`is_dicom_seg`)."""
    reader = reader_for(Path(path))
    return isinstance(reader, (NiftiReader, ItkReader)) or is_dicom_seg(path)


def is_dicom_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation: a file the DICOM reader takes whose SOP Class
    UID (read from its header, without the pixel data; cached) is :data:`SEG_STORAGE`."""
    path = Path(path)
    if not isinstance(reader_for(path), DicomReader):
        return False
    return _sop_class(str(path), file_stamp(path)) == SEG_STORAGE


@functools.lru_cache(maxsize=256)
def _sop_class(path: str, stamp: tuple[int, int]) -> str | None:
    del stamp  # part of the key
    pydicom = need("pydicom", Path(path))
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not readable as DICOM: the image reader says why, if it is asked
        return None
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (None if meta is None else meta.get("MediaStorageSOPClassUID"))
    return None if uid is None else str(uid)


def read_label_volume(path: Path, values: Sequence[int] | None = None) -> LabelVolume:
    """Read any label file (NIfTI, NRRD / MetaImage, DICOM-SEG) as a :class:`LabelVolume`.

    ``values`` (the label values that count; None: all) only chooses which segments of a
    DICOM-SEG are read (its values are segment numbers); the other formats are read whole and
    :func:`labelled` chooses.

    Raises:
        UserError: ``cannot read label volume <path>: <reason>`` for a missing or unreadable
            file, a file of another kind, or voxels that are not numbers; a missing optional
            package (:class:`~iqeclip.data.readers.errors.MissingPackage`).
    """
    path = Path(path)
    if not path.is_file():
        raise cannot_read(WHAT, path, "no such file")
    reader = reader_for(path)
    if isinstance(reader, NiftiReader):
        return _nifti_labels(path)
    if isinstance(reader, ItkReader):
        return _itk_labels(path)
    if is_dicom_seg(path):
        return _seg_volume(path, values)
    kind = "a DICOM file that is no DICOM-SEG" if isinstance(reader, DicomReader) else "no"
    raise cannot_read(
        WHAT, path, f"{kind} label volume (expected NIfTI, NRRD, MetaImage or DICOM-SEG)"
    )


def labelled(data: np.ndarray, values: Sequence[int] | None = None) -> np.ndarray:
    """The voxels ``(X, Y, Z)`` of a :class:`LabelVolume`'s data whose value counts in any
    layer: any non-zero value, or one of ``values``."""
    hit = data != 0 if values is None else np.isin(data, np.asarray(values))
    return hit.any(axis=3)


def _layers(data: np.ndarray, dims: int, path: Path) -> np.ndarray:
    """A label file's values as integers ``(X, Y, Z, layers)``: its first ``dims`` (at most 3)
    axes are space, every further one (time, components, a Slicer segmentation's layers) a
    layer. Whole-valued floats are labels; other floats (a probability map) count where they
    are not zero."""
    data = np.asarray(data)
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f":
        data = np.where(np.isfinite(data), data, 0)
        whole = np.rint(data)
        data = whole.astype(np.int64) if np.array_equal(whole, data) else (data != 0)
        data = data.astype(np.uint8) if data.dtype == bool else data
    elif data.dtype.kind not in "iu":
        raise cannot_read(WHAT, path, f"its voxels are {data.dtype}, not labels")
    keep = min(dims, 3)
    if keep < 2 or data.size == 0:
        raise cannot_read(WHAT, path, f"{data.ndim}-D, of shape {data.shape}: not a volume")
    spatial = (*data.shape[:keep], *(1,) * (3 - keep))
    return data.reshape(*spatial, -1)


def _nifti_labels(path: Path) -> LabelVolume:
    nib = need("nibabel", path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # any parser failure is a problem with the user's file
        raise cannot_read(WHAT, path, first_line(exc)) from None
    return LabelVolume(_layers(data, data.ndim, path), affine)


def _itk_labels(path: Path) -> LabelVolume:
    """An NRRD or MetaImage label file: a 3D Slicer segmentation's layers are its components
    (``kinds: list domain domain domain``) or its fourth axis."""
    header = read_itk_header(path, WHAT)
    try:
        image = header.Execute()
    except Exception as exc:  # a truncated file or a missing data file fails here
        raise cannot_read(WHAT, path, itk_reason(exc)) from None
    affine = ras_affine(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return LabelVolume(_layers(itk_voxels(image), image.GetDimension(), path), affine)


def _segread(path: Path) -> Any:
    """The DICOM-SEG read by highdicom (kept for the next call: by source instance, then by
    geometry)."""
    return _segread_cached(str(path), file_stamp(path))


@functools.lru_cache(maxsize=2)
def _segread_cached(path: str, stamp: tuple[int, int]) -> Any:
    del stamp  # part of the key
    hd = need("highdicom", Path(path))
    try:
        return hd.seg.segread(path)
    except Exception as exc:
        raise cannot_read("DICOM-SEG", Path(path), first_line(exc)) from None


def _seg_pixels(
    seg: Any, values: Sequence[int] | None, fetch: Callable[..., Any]
) -> tuple[Any, np.ndarray]:
    """What ``fetch`` (highdicom's ``get_volume`` or ``get_pixels_by_source_instance``) gives
    for a DICOM-SEG's chosen segments, and its array of labels: each voxel the number of a
    chosen segment that holds it (0: none; a fractional segment holds the voxels of at least
    one half)."""
    numbers = [int(n) for n in seg.segment_numbers]
    chosen = numbers if values is None else [n for n in numbers if n in set(values)]
    if str(getattr(seg.segmentation_type, "value", seg.segmentation_type)) != "FRACTIONAL":
        got = fetch(
            segment_numbers=chosen or numbers, combine_segments=True, skip_overlap_checks=True
        )
        array = np.asarray(getattr(got, "array", got))
        return got, array if chosen else np.zeros_like(array)
    got = fetch(segment_numbers=chosen or numbers, rescale_fractional=True)
    stacked = np.asarray(getattr(got, "array", got))
    held = np.where(stacked >= 0.5, np.asarray(chosen or numbers), 0)
    return got, (held if chosen else np.zeros_like(held)).max(axis=-1)


def _seg_volume(path: Path, values: Sequence[int] | None) -> LabelVolume:
    """A DICOM-SEG by its own geometry: its frames as one regularly spaced volume in its
    frame of reference (highdicom's ``get_volume``; frames left out as empty are empty)."""
    seg = _segread(path)
    try:
        volume, data = _seg_pixels(seg, values, seg.get_volume)
    except Exception as exc:
        raise cannot_read(
            "DICOM-SEG",
            path,
            f"its frames do not form one volume ({first_line(exc)}), and it is not on the "
            "DICOM series it references",
        ) from None
    affine = LPS @ np.asarray(volume.affine, dtype=np.float64)  # highdicom's is LPS
    return LabelVolume(_layers(data, 3, path), affine)


def volume_geometry(image: Path, slices: Sequence[Slice]) -> Geometry:
    """The :class:`~iqeclip.data.readers.base.Geometry` of the volume one input's slices come
    from.

    Raises:
        UserError: The input is no volume (a 2-D image, several DICOM volumes in one folder, a
            DICOM series without usable geometry).
    """
    volumes = {None if s.dicom is None else s.dicom.volume_id for s in slices}
    if len(volumes) > 1:
        raise UserError(
            f"{image} holds {len(volumes)} DICOM volumes: give each series its own folder to "
            "pair it with a label volume"
        )
    geometry, dicom = slices[0].geometry, slices[0].dicom
    if geometry is not None:
        return geometry
    if dicom is not None and dicom.series is not None:
        raise UserError(
            f"DICOM series {image} has no usable geometry (ImageOrientationPatient, "
            "PixelSpacing, ImagePositionPatient, one size, even spacing), so a label volume "
            "cannot be aligned to it"
        )
    reader = reader_for(image)
    raise UserError(
        f"a label volume needs a volume to label: {image} is a 2-D "
        f"{'input' if reader is None else reader.name}; give an image mask"
    )


def _seg_on_series(
    mask: Path, slices: Sequence[Slice], geometry: Geometry, values: Sequence[int] | None
) -> np.ndarray | None:
    """A DICOM-SEG on the series it references, by its source instances: the labels on the
    series' grid ``(columns, rows, slices)``, each frame at the slice whose SOPInstanceUID it
    names; None when the image is not that series (then the SEG's geometry aligns it)."""
    uids = [None if s.dicom is None else s.dicom.sop_instance_uid for s in slices]
    if None in uids or len(set(uids)) != len(uids) or geometry.grid[2] != len(slices):
        return None  # not a series of single-frame files
    seg = _segread(mask)
    referenced = {str(uid[2]) for uid in seg.get_source_image_uids()}
    if not referenced or not referenced <= set(uids):
        return None
    fetch = functools.partial(
        seg.get_pixels_by_source_instance, uids, assert_missing_frames_are_empty=True
    )
    try:
        pixels = _seg_pixels(seg, values, fetch)[1]
    except Exception as exc:  # e.g. spatial locations not preserved: by geometry instead
        logger.debug(f"DICOM-SEG {mask}: not read by its source instances ({first_line(exc)})")
        return None
    if pixels.shape[1:3] != (geometry.grid[1], geometry.grid[0]):
        return None  # frames of another size than the source's: by geometry
    data = np.zeros(geometry.grid, dtype=bool)
    for s, frame in zip(slices, pixels, strict=True):
        data[:, :, s.index or 0] = frame.T != 0
    return data


def _reoriented(
    data: np.ndarray, source: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``data`` with its voxel axes permuted and flipped to run along ``target``'s, and its
    affine moved with them; None when its axes are not along the target's (nibabel's rule:
    each axis to the target axis it runs closest to)."""
    try:
        steps = np.linalg.solve(target[:3, :3], source[:3, :3])  # column j: axis j in target
    except np.linalg.LinAlgError:
        return None
    along = np.abs(steps).argmax(axis=0)
    if sorted(along.tolist()) != [0, 1, 2]:
        return None
    order = np.argsort(along)
    out = np.transpose(data, order)
    moved = np.asarray(source, dtype=np.float64).copy()
    moved[:3, :3] = source[:3, order]
    for axis in range(3):
        if steps[axis, order[axis]] < 0:
            out = np.flip(out, axis)
            moved[:3, 3] += moved[:3, axis] * (out.shape[axis] - 1)
            moved[:3, axis] *= -1
    return np.ascontiguousarray(out), moved


def _grid_words(shape: Sequence[int], affine: np.ndarray) -> str:
    """A grid in words: its voxels, their spacing and where its first voxel lies (RAS mm)."""
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    corner = ", ".join(f"{v:.4g}" for v in np.asarray(affine)[:3, 3])
    return (
        f"{'x'.join(map(str, shape))} voxels of {' x '.join(f'{s:.3g}' for s in spacing)} mm "
        f"from ({corner})"
    )


_SAID: set[tuple[str, str, tuple[Any, ...]]] = set()
"""The label volumes already said to be resampled: one log line each."""


def _resampled(
    data: np.ndarray,
    source: np.ndarray,
    shape: tuple[int, ...],
    target: np.ndarray,
    files: tuple[Path, Path],
) -> np.ndarray:
    """Labels resampled onto the grid ``shape`` / ``target`` by nearest neighbour (SimpleITK;
    outside the label volume: unlabelled), said once per label volume."""
    mask, image = files
    sitk = need("SimpleITK", mask)
    try:
        moving = itk_image(data.astype(np.uint8) + 1, source)  # 0: outside the label volume
        grid = itk_image(np.zeros(shape, dtype=np.uint8), target)
        out = itk_voxels(sitk.Resample(moving, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    except Exception as exc:  # a degenerate geometry ITK refuses
        raise cannot_read(WHAT, mask, f"cannot be resampled: {itk_reason(exc)}") from None
    if not out.any():
        reason = f"it does not overlap {image} at all (is it the label volume of another scan?)"
        raise UnreadableFile(
            f"label volume {mask} is not in the space of {image}: {reason}", mask, reason
        )
    key = (str(mask), str(image), (file_stamp(mask), file_stamp(image)))
    if key not in _SAID:
        _SAID.add(key)
        logger.info(
            f"label volume {mask} is on another grid than {image}: resampled by nearest "
            f"neighbour from {_grid_words(data.shape, source)} to the image's "
            f"{_grid_words(shape, target)}"
        )
    return out == 2


def aligned_labels(
    mask: Path,
    shape: tuple[int, ...],
    affine: np.ndarray,
    image: Path,
    values: Sequence[int] | None = None,
) -> np.ndarray:
    """A label volume's labelled voxels (:func:`labelled`) as a bool array of ``shape`` in the
    voxel order of ``affine`` (the image's grid).

    The exact way first: the label volume's axes permuted and flipped into the grid's order
    (never interpolated) must give the grid's shape and its affine within
    :data:`AFFINE_TOLERANCE_MM`; otherwise it is resampled onto the grid by nearest neighbour
    (one log line says so).

    Raises:
        UserError: The label volume unreadable (:func:`read_label_volume`), or ``label volume
            <mask> is not in the space of <image>: it does not overlap ...``.
    """
    mask, target = Path(mask), np.asarray(affine, dtype=np.float64)
    volume = read_label_volume(mask, values)
    data = labelled(volume.data, values)
    moved = _reoriented(data, volume.affine, target)
    exact = moved is not None and moved[0].shape == tuple(shape)
    if exact and float(np.abs(moved[1] - target).max()) <= AFFINE_TOLERANCE_MM:
        return moved[0]
    return _resampled(data, volume.affine, tuple(shape), target, (mask, Path(image)))


def _warn_other_frame(mask: Path, slices: Sequence[Slice]) -> None:
    """Warn when a DICOM-SEG is aligned by geometry to a DICOM image of another frame of
    reference (its coordinates may not be the same space)."""
    if slices[0].dicom is None:
        return
    pydicom, tag = need("pydicom", mask), "FrameOfReferenceUID"
    try:
        frames = [
            pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=[tag]).get(tag)
            for path in (mask, slices[0].source)
        ]
    except Exception:  # no header to compare: nothing to say
        return
    if None not in frames and str(frames[0]) != str(frames[1]):
        logger.warning(
            f"warning: DICOM-SEG {mask} is in another frame of reference than "
            f"{slices[0].dicom.series or slices[0].source}: aligned by scanner coordinates"
        )


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _labels(
    mask: str, image: str, stamps: tuple[Any, ...], reading: Reading
) -> tuple[np.ndarray, ...]:
    del stamps
    mask_path, image_path = Path(mask), Path(image)
    slices = read_slices(image_path, reading)
    geometry = volume_geometry(image_path, slices)
    data = None
    if is_dicom_seg(mask_path):
        data = _seg_on_series(mask_path, slices, geometry, reading.label_values)
        if data is None:
            _warn_other_frame(mask_path, slices)
    if data is None:
        data = aligned_labels(
            mask_path, geometry.grid, geometry.affine, image_path, reading.label_values
        )
    return tuple(geometry.view.take(data, s.index or 0) for s in slices)


def label_slices(
    mask: Path, image: Path, reading: Reading = DEFAULT_READING
) -> tuple[np.ndarray, ...]:
    """A label volume's bool slices, parallel to ``read_slices(image, reading)`` (cached).

    The image is a volume (NIfTI, NRRD, MetaImage) or a single DICOM series: the labels that
    count (``reading.label_values``; default any non-zero) are put on the image's grid (a
    volume file's own; a series' ``(columns, rows, slices)`` grid of
    :func:`~iqeclip.data.readers.dicom_series.series_affine`, the grid ``predict`` writes and
    ITK reads) as the module docstring says (by source instance, exactly, or resampled), and
    each slice turned as the image's is.

    Raises:
        UserError: Naming the label volume, when it cannot be read or does not overlap the
            image (naming both); naming the image when it is no volume.
    """
    mask, image = Path(mask), Path(image)
    stamps = (file_stamp(mask), file_stamp(image))
    return _labels(str(mask), str(image), stamps, reading)


def forget_labels() -> None:
    """Drop the aligned label volumes kept for the next slices."""
    _labels.cache_clear()
    _sop_class.cache_clear()
    _segread_cached.cache_clear()
