"""A DICOM series' results as DICOM, for a PACS and its viewers (OHIF, a workstation): a
Segmentation (``--outputs dicom-seg``: the predicted mask, binary) and a Parametric Map
(``--outputs dicom-pmap``: the anomaly probability, float), one of each per series, written with
highdicom.

Both reference the source series: they join its study and frame of reference, and each frame
names the source instance it lies on (its SOPInstanceUID, in the frame's derivation). A frame is
the source instance's picture as stored (rows by columns), so predict puts its viewed maps back
into the series grid ``(columns, rows, slices)``
(:meth:`~iqeclip.data.readers.orientation.View.put`) and hands over each slice transposed: frame
``k`` lies on the instance of slice ``k``. Both name the algorithm (``iqeclip``, its version and
the checkpoint's file name: the segment's algorithm identification, the software versions, the
device serial number) and carry the content label ``IQECLIP``, which a viewer shows; their series
get a description (``IQECLIP anomaly mask`` / ``IQECLIP anomaly probability``) and a series
number of the source's plus 1000 (SEG) or 2000 (Parametric Map), so they list after it.

A source instance without a type 2 attribute the objects copy (PatientBirthDate, StudyDate...,
often removed by an export) is taken with it empty, as DICOM allows. Only inputs read as DICOM
series (a folder of single-frame instances with one geometry) get these objects; predict says
once which inputs do not (:func:`check_dicom_outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.readers import reader_for
from iqeclip.errors import UserError, first_line, param
from iqeclip.runtime.files import atomic_write

__all__ = [
    "CONTENT_LABEL",
    "Algorithm",
    "available_dicom_outputs",
    "check_dicom_outputs",
    "is_dicom_series",
    "write_dicom",
]

CONTENT_LABEL = "IQECLIP"
"""The content label of every object (a viewer shows it; a DICOM CS: capitals, 16 at most)."""
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
_SERIES_OFFSET = {"dicom-seg": 1000, "dicom-pmap": 2000}
_DESCRIPTION = {"dicom-seg": "anomaly mask", "dicom-pmap": "anomaly probability"}


@dataclass(frozen=True)
class Algorithm:
    """What made the objects: iqeclip, its version and the checkpoint (or model) file name."""

    version: str
    checkpoint: str
    name: str = "iqeclip"


def is_dicom_series(path: Path) -> bool:
    """Whether predict reads ``path`` as a DICOM series folder (the inputs that get DICOM
    objects)."""
    reader = reader_for(Path(path))
    return reader is not None and reader.dicom_objects


def check_dicom_outputs(
    kinds: frozenset[str], paths: Sequence[Path], pixel_threshold: float | None
) -> list[Path]:
    """Check ``--outputs``' DICOM kinds before any work; the inputs that get none.

    Raises:
        UserError: ``dicom-seg`` without a calibrated pixel threshold (as ``mask``), highdicom
            missing, or no input a DICOM series.
    """
    if not kinds:
        return []
    if "dicom-seg" in kinds and pixel_threshold is None:
        raise UserError(
            f"{param('outputs')} dicom-seg needs a pixel threshold in the checkpoint: run "
            f"iqeclip calibrate on data with masks ({param('data_path')} and {param('obj')}) "
            "first"
        )
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise UserError(
            f"{param('outputs')} {','.join(sorted(kinds))} needs highdicom: "
            "pip install 'iqeclip[medical]'"
        ) from None
    others = [p for p in paths if not is_dicom_series(p)]
    if paths and len(others) == len(paths):
        raise UserError(
            f"{param('outputs')} {','.join(sorted(kinds))}: no input is a DICOM series folder "
            f"({paths[0]}{' ...' if len(paths) > 1 else ''}); these objects are written only "
            "for DICOM series"
        )
    return others


def available_dicom_outputs(paths: Sequence[Path], pixel_threshold: float | None) -> list[str]:
    """The DICOM objects the inputs can get where nobody asked (``serve``'s download): both
    (the Segmentation only with a pixel threshold) when an input is a DICOM series and
    highdicom is installed, else none."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return []
    if not any(is_dicom_series(p) for p in paths):
        return []
    return ["dicom-pmap", *(["dicom-seg"] if pixel_threshold is not None else [])]


def _sources(files: Sequence[Path], uids: Sequence[str]) -> list[Any]:
    """The source instances' headers, in slice order, each checked against the SOPInstanceUID
    its slice was read with; missing type 2 attributes added empty."""
    import pydicom

    sources = []
    for file, uid in zip(files, uids, strict=True):
        ds = pydicom.dcmread(str(file), stop_before_pixels=True)
        if str(ds.get("SOPInstanceUID", "")) != uid:
            raise UserError(f"{file} changed while predict ran (its SOPInstanceUID is not {uid})")
        for keyword in _TYPE_2:
            if keyword not in ds:
                setattr(ds, keyword, "")
        sources.append(ds)
    return sources


def _common(kind: str, sources: Sequence[Any], algorithm: Algorithm) -> dict[str, Any]:
    """The arguments both objects take: identity, series, maker, label."""
    from pydicom.uid import generate_uid

    source_number = sources[0].get("SeriesNumber")
    number = int(source_number) if source_number not in (None, "") else 0
    return {
        "source_images": list(sources),
        "series_instance_uid": generate_uid(),
        "series_number": number + _SERIES_OFFSET[kind],
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": algorithm.name,
        "manufacturer_model_name": algorithm.name,
        "software_versions": algorithm.version,
        "device_serial_number": algorithm.checkpoint[:64],
        "content_label": CONTENT_LABEL,
        "content_description": f"{algorithm.name} {_DESCRIPTION[kind]}"[:64],
    }


def _segmentation(mask: np.ndarray, sources: Sequence[Any], algorithm: Algorithm) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        parameters={"checkpoint": algorithm.checkpoint},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="anomaly",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        display_color=hd.color.CIELabColor.from_rgb(255, 0, 0),
    )
    return hd.seg.Segmentation(
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        omit_empty_frames=False,  # one frame per source instance, an empty one included
        **_common("dicom-seg", sources, algorithm),
    )


def _parametric_map(maps: np.ndarray, sources: Sequence[Any], algorithm: Algorithm) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mapping = hd.pm.RealWorldValueMapping(
        lut_label=CONTENT_LABEL,
        lut_explanation="anomaly probability",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
    )
    pmap = hd.pm.ParametricMap(
        pixel_array=maps.astype(np.float32),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        **_common("dicom-pmap", sources, algorithm),
    )
    # General Series' Laterality (type 2C): the source's, else empty (unknown)
    pmap.Laterality = sources[0].get("Laterality", "")
    return pmap


def write_dicom(
    kind: str,
    path: Path,
    frames: np.ndarray,
    files: Sequence[Path],
    uids: Sequence[str],
    algorithm: Algorithm,
) -> None:
    """Write one series' ``kind`` object (``dicom-seg``: ``frames`` is the mask;
    ``dicom-pmap``: the anomaly probability) to ``path``, atomically.

    Args:
        kind: A key of :data:`~iqeclip.inference.files.DICOM_FILES`.
        path: The file to write.
        frames: ``(slices, rows, columns)``: frame ``k`` as instance ``k`` stores its pixels.
        files: The source instances' files, in slice order.
        uids: Their SOPInstanceUIDs, as read.
        algorithm: What made it.

    Raises:
        UserError: A source file changed, or highdicom refused the series (naming it), or the
            file cannot be written.
    """
    sources = _sources(files, uids)
    make = _segmentation if kind == "dicom-seg" else _parametric_map
    try:
        dataset = make(frames, sources, algorithm)
    except (ValueError, AttributeError, TypeError) as exc:  # highdicom: what the series lacks
        raise UserError(
            f"cannot write {path} for the series of {files[0]}: {first_line(exc)}"
        ) from None
    dataset.SeriesDescription = f"{CONTENT_LABEL} {_DESCRIPTION[kind]}"
    atomic_write(path, lambda tmp: dataset.save_as(str(tmp), enforce_file_format=True))
