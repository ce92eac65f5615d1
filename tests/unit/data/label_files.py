"""Label volumes as annotation tools write them, for the study of :mod:`tests.scans`: a NIfTI,
an NRRD and a 3D Slicer ``.seg.nrrd`` (SimpleITK, with Slicer's segment metadata) on the
series' grid or a part of it, and a DICOM-SEG (highdicom) referencing the series.

Labels are given as ``labels[k, r, c]`` (slice k, row r, column c of the series); the files'
geometry is derived from the DICOM definition (:class:`tests.scans.Study`), not from iqeclip.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tests.scans import Study

PATIENT_STUDY = dict(
    PatientBirthDate="19700101",
    PatientSex="O",
    StudyDate="20240101",
    StudyTime="120000",
    AccessionNumber="A1",
    ReferringPhysicianName="",
    StudyID="1",
)
"""The patient and study attributes a DICOM-SEG copies from its source images."""


def study_labels(study: Study) -> np.ndarray:
    """A multi-label volume on the study's lesions: 1 on the lesion of slice 2, 2 on the lesion
    of slice 3 (``labels[k, r, c]``)."""
    labels = np.zeros((study.slices, study.rows, study.columns), np.uint8)
    labels[2, 5:9, 30:40] = 1
    labels[3, 25:34, 6:10] = 2
    return labels


def write_series(pydicom: Any, study: Study, folder: Path) -> Path:
    """The study's series, with the attributes a DICOM-SEG copies."""
    return study.write_dicom(pydicom, folder, **PATIENT_STUDY)


def itk_labels(sitk: Any, study: Study, labels: np.ndarray, first: int = 0) -> Any:
    """``labels[k, r, c]`` (slices ``first``, ``first + 1``, ...) as a SimpleITK image on the
    series' grid: voxel (c, r, k), LPS geometry straight from the DICOM attributes."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels))  # (k, r, c) = (z, y, x)
    image.SetOrigin([float(v) for v in study.position(first)])
    image.SetSpacing([study.spacing[1], study.spacing[0], study.step_mm])
    columns = np.stack([study.row_dir, study.col_dir, study.normal], axis=1)
    image.SetDirection([float(v) for v in columns.ravel()])
    return image


def slicer_metadata(image: Any, segments: list[tuple[str, int, int]]) -> Any:
    """3D Slicer's segment fields on ``image``: ``(name, label value, layer)`` per segment."""
    for i, (name, value, layer) in enumerate(segments):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_ID", f"Segment_{i + 1}")
        image.SetMetaData(f"Segment{i}_LabelValue", str(value))
        image.SetMetaData(f"Segment{i}_Layer", str(layer))
    return image


def write_seg(
    pydicom: Any, study: Study, labels: np.ndarray, path: Path, fractional: bool = False
) -> Path:
    """A DICOM-SEG of ``labels[k, r, c]`` (one segment per non-zero value, numbered by it)
    referencing the study's series, empty frames left out (highdicom's default)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [study.dataset(pydicom, k, **PATIENT_STUDY) for k in range(study.slices)]
    numbers = sorted(int(v) for v in np.unique(labels) if v)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"lesion {n}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in range(1, max(numbers) + 1)
    ]
    stacked = np.stack([labels == n for n in range(1, max(numbers) + 1)], axis=-1)
    with warnings.catch_warnings():  # highdicom's doubt about the name "P1"
        warnings.simplefilter("ignore", UserWarning)
        seg = _segmentation(hd, sources, stacked, descriptions, fractional)
    seg.save_as(str(path))
    return path


def _segmentation(
    hd: Any, sources: list, stacked: np.ndarray, descriptions: list, fractional: bool
) -> Any:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked.astype(np.float32) if fractional else stacked,
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="tests",
        manufacturer_model_name="label_files",
        software_versions="1",
        device_serial_number="1",
    )


def viewed_lesion(slices: Any, k: int) -> np.ndarray:
    """Where slice ``k``'s lesion is in the picture the model sees: its brightest pixels (the
    study's lesions are far above the rest of their slice)."""
    image = slices[k].image
    return image >= image.max() - 1e-6
